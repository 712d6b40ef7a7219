"""docs/protocol.md section 1 against a live gunicorn + gevent server, standalone and embedded."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import Service
from tests.support.streams import SSEStream, unique


def test_stream_opens_with_headers_and_connected_comment(service: Service) -> None:
    channel = unique("ch")
    with SSEStream(service.base, {"channel": channel}) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["connection"] == "keep-alive"
        assert stream.headers["access-control-allow-origin"] == "*"
        stream.assert_silent(0.3)
        assert stream.decoder.comments[0] == f"Connected to channel: {channel}"


@pytest.mark.parametrize(
    "payload",
    [
        {"nested": {"list": [1, 2.5, None, True], "deep": {"x": "y"}}},
        "unicode: héllo wörld ✓ 日本語 🎉",
        "multi\nline\r\npayload\rwith breaks",
        [1, "two", {"three": 3}],
        None,
        0,
    ],
)
def test_message_roundtrip_is_compact_json_in_one_data_line(service: Service, payload: object) -> None:
    channel = unique("ch")
    with SSEStream(service.base, {"channel": channel}) as stream:
        assert service.push({"channel": channel, "payload": payload}).json()["sent"] == 1
        event = stream.next_event()
        assert event.event == "message"
        assert json.loads(event.data) == {"channel": channel, "payload": payload}
        assert "\n" not in event.data
        assert event.data == json.dumps(
            {"channel": channel, "payload": payload}, separators=(",", ":"), ensure_ascii=False
        )
        assert event.id


def test_routing_by_topic_token_and_both(service: Service) -> None:
    channel = unique("ch")
    streams = {
        "plain": SSEStream(service.base, {"channel": channel}),
        "room1": SSEStream(service.base, {"channel": channel, "topic": "room1"}),
        "alice": SSEStream(service.base, {"channel": channel, "token": "alice"}),
        "alice-room1": SSEStream(service.base, {"channel": channel, "token": "alice", "topic": "room1"}),
        "bob-room2": SSEStream(service.base, {"channel": channel, "token": "bob", "topic": "room2"}),
    }
    try:
        cases = [
            ({}, {"plain", "room1", "alice", "alice-room1", "bob-room2"}),
            ({"topic": "room1"}, {"room1", "alice-room1"}),
            ({"tokens": "alice"}, {"alice", "alice-room1"}),
            ({"tokens": ["alice", "bob"]}, {"alice", "alice-room1", "bob-room2"}),
            ({"tokens": ["alice"], "topic": "room1"}, {"alice-room1"}),
            ({"tokens": ["bob"], "topic": "room1"}, set()),
        ]
        for index, (audience, expected) in enumerate(cases):
            body: dict[str, object] = {"channel": channel, "payload": index}
            if audience:
                body["audience"] = audience
            assert service.push(body).json()["sent"] == len(expected), audience
        received: dict[str, list[object]] = {name: [] for name in streams}
        for name, stream in streams.items():
            want = sum(1 for _, expected in cases if name in expected)
            received[name] = [m["payload"] for m in stream.messages(want)]
            stream.assert_silent(0.2)
        for name in streams:
            assert received[name] == [i for i, (_, expected) in enumerate(cases) if name in expected]
    finally:
        for stream in streams.values():
            stream.close()


def test_messages_never_cross_channels_and_keep_order(service: Service) -> None:
    first, second = unique("ch"), unique("ch")
    with SSEStream(service.base, {"channel": first}) as a, SSEStream(service.base, {"channel": second}) as b:
        for i in range(50):
            service.push({"channel": first if i % 2 else second, "payload": i})
        assert [m["payload"] for m in a.messages(25)] == list(range(1, 50, 2))
        assert [m["payload"] for m in b.messages(25)] == list(range(0, 50, 2))


def test_sent_counts_connections_written_to(service: Service) -> None:
    channel = unique("ch")
    assert service.push({"channel": channel, "payload": 1}).json()["sent"] == 0
    streams = [SSEStream(service.base, {"channel": channel}) for _ in range(3)]
    try:
        assert service.push({"channel": channel, "payload": 2}).json()["sent"] == 3
    finally:
        for stream in streams:
            stream.close()


def test_channel_is_required(service: Service) -> None:
    for params in ({}, {"channel": ""}):
        response = requests.get(service.base, params=params, timeout=5)
        assert response.status_code == 400
        assert response.json() == {"error": "channel query parameter is required"}


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "Authorization header required"),
        ({"Authorization": "Basic abc"}, 401, "Authorization header required"),
        ({"Authorization": "Bearer wrong"}, 403, "Invalid token"),
    ],
)
def test_push_authorization(service: Service, headers: dict[str, str], status: int, error: str) -> None:
    response = requests.post(service.base, json={"channel": "x", "payload": 1}, headers=headers, timeout=5)
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_push_with_invalid_json_is_400(service: Service) -> None:
    response = requests.post(
        service.base, data=b"{not json", headers={"Authorization": f"Bearer {service.secret}"}, timeout=5
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid JSON body"}


@pytest.mark.parametrize(
    "body",
    [
        {"payload": 1},
        {"channel": "", "payload": 1},
        {"channel": 5, "payload": 1},
        {"channel": "c", "audience": {"topic": ""}},
        {"channel": "c", "audience": {"topic": 3}},
        {"channel": "c", "audience": {"tokens": 3}},
        {"channel": "c", "audience": {"tokens": ["a", 3]}},
        {"channel": "c", "audience": "everyone"},
        {"channel": "c", "audience": None},
        {"channel": "c", "audience": {"tokens": None}},
        {"channel": "c", "audience": {"topic": None}},
        "a string",
        42,
    ],
)
def test_push_with_wrong_shape_is_400_with_details(service: Service, body: object) -> None:
    response = service.push(body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "Invalid request body"
    assert isinstance(answer["details"], str) and answer["details"]


def test_body_is_json_whatever_the_content_type(service: Service) -> None:
    channel = unique("ch")
    with SSEStream(service.base, {"channel": channel}) as stream:
        response = requests.post(
            service.base,
            data=json.dumps({"channel": channel, "payload": "text/plain"}),
            headers={"Authorization": f"Bearer {service.secret}", "Content-Type": "text/plain"},
            timeout=5,
        )
        assert response.json()["sent"] == 1
        assert stream.messages(1)[0]["payload"] == "text/plain"


def test_options_answers_cors_preflight(service: Service) -> None:
    response = requests.options(service.base, timeout=5)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"


def test_other_methods_are_405_json(service: Service) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        response = requests.request(method, service.base, timeout=5)
        assert response.status_code == 405
        assert response.json() == {"error": "Method not allowed"}


def test_unknown_path_is_404_json(service: Service) -> None:
    response = requests.get(service.base.rstrip("/") + "/no/such/path", timeout=5)
    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}


def test_health(service: Service) -> None:
    health = service.health()
    assert health["status"] == "ok"
    assert isinstance(health["uptime"], (int, float))
    assert isinstance(health["connections"], int)


def test_disconnect_frees_the_connection_promptly(service: Service) -> None:
    channel = unique("ch")
    before = service.health()["connections"]
    stream = SSEStream(service.base, {"channel": channel})
    stream.assert_silent(0.1)
    assert service.health()["connections"] == before + 1
    stream.close()
    # No push and no heartbeat needed: the server sees the hang-up itself.
    deadline = time.monotonic() + 5
    while service.health()["connections"] != before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert service.health()["connections"] == before
    assert service.push({"channel": channel, "payload": "after"}).json()["sent"] == 0


def test_lone_surrogate_in_payload_is_forwarded_as_its_json_escape(service: Service) -> None:
    # Valid JSON that JSON.stringify writes for a lone surrogate; it is not UTF-8 once decoded.
    channel = unique("ch")
    body = f'{{"channel": "{channel}", "payload": "a\\ud800b"}}'
    with SSEStream(service.base, {"channel": channel}) as stream:
        response = requests.post(
            service.base, data=body, headers={"Authorization": f"Bearer {service.secret}"}, timeout=5
        )
        assert response.status_code == 200
        assert response.json()["sent"] == 1
        assert stream.next_event().data == f'{{"channel":"{channel}","payload":"a\\ud800b"}}'
