"""Idempotent publishing without Redis: a repeat of an idempotency key delivers nothing and
answers the first push's id, over HTTP, in process, and through ServerClient's retries."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask

from flask_impulse import Impulse, PushError, PushResult, ServerClient, ServerClientError
from flask_impulse.broker.backplane import Published
from flask_impulse.broker.idempotency import IdempotencyStore
from tests.conftest import SECRET, Service
from tests.support.lossy_proxy import LossyProxy
from tests.support.server import LiveServer
from tests.support.streams import SSEStream, unique

#: The TTL of the server that lets keys expire: long enough that a repeat sent at once is
#: within it, short enough to wait for.
SHORT_TTL = 2.0


def delivered(stream: SSEStream, service: Service, channel: str) -> list[dict[str, Any]]:
    """Every message the stream got up to now: a marker pushed last ends the reading, since
    messages arrive in push order; so a duplicate cannot hide behind a fixed wait."""
    marker = unique("marker")
    assert service.push({"channel": channel, "payload": marker}).status_code == 200
    received: list[dict[str, Any]] = []
    while True:
        event = stream.next_event()
        message = json.loads(event.data)
        if message.get("payload") == marker:
            return received
        received.append({**message, "id": event.id})


def push(service: Service, body: object, key: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {service.secret}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(service.base, json=body, headers=headers, timeout=10)


# -- over HTTP ---------------------------------------------------------------------------
def test_same_key_twice_is_delivered_once_and_the_repeat_answers_the_first_id(service: Service) -> None:
    channel, key = unique("idem"), str(uuid.uuid4())
    with SSEStream(service.base, {"channel": channel}) as stream:
        first = push(service, {"channel": channel, "payload": "once"}, key)
        repeat = push(service, {"channel": channel, "payload": "once"}, key)
        assert first.status_code == repeat.status_code == 200
        assert first.json() == {"sent": 1, "id": first.json()["id"]}  # no "duplicate" key on a first push
        assert repeat.json() == {"sent": 1, "id": first.json()["id"], "duplicate": True}
        once = {"channel": channel, "payload": "once", "id": first.json()["id"]}
        assert delivered(stream, service, channel) == [once]


def test_different_keys_are_two_deliveries(service: Service) -> None:
    channel = unique("idem")
    with SSEStream(service.base, {"channel": channel}) as stream:
        answers = [push(service, {"channel": channel, "payload": n}, str(uuid.uuid4())).json() for n in (1, 2)]
        assert [a.get("duplicate") for a in answers] == [None, None]
        assert answers[0]["id"] != answers[1]["id"]
        assert [m["payload"] for m in delivered(stream, service, channel)] == [1, 2]


def test_a_key_in_the_header_and_the_same_key_in_the_field_are_one_push(service: Service) -> None:
    channel, key = unique("idem"), unique("key")
    with SSEStream(service.base, {"channel": channel}) as stream:
        first = push(service, {"channel": channel, "payload": 1, "idempotencyKey": key}).json()
        by_header = push(service, {"channel": channel, "payload": 1}, key).json()
        both = push(service, {"channel": channel, "payload": 1, "idempotencyKey": key}, key).json()
        # The IETF draft's structured-field form of the header names the same key.
        quoted = push(service, {"channel": channel, "payload": 1}, f'"{key}"').json()
        assert by_header == both == quoted == {"sent": 1, "id": first["id"], "duplicate": True}
        assert len(delivered(stream, service, channel)) == 1


def test_a_batch_with_a_repeated_key_delivers_it_once_and_flags_the_repeat(service: Service) -> None:
    channel, key, earlier = unique("idem"), unique("key"), unique("key")
    with SSEStream(service.base, {"channel": channel}) as stream:
        first = push(service, {"channel": channel, "payload": "earlier"}, earlier).json()
        batch = [
            {"channel": channel, "payload": "a", "idempotencyKey": key},
            {"channel": channel, "payload": "b"},
            {"channel": channel, "payload": "a again", "idempotencyKey": key},
            {"channel": channel, "payload": "earlier again", "idempotencyKey": earlier},
        ]
        answer = push(service, batch)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r.get("duplicate", False) for r in results] == [False, False, True, True]
        assert results[2]["id"] == results[0]["id"]
        assert results[3] == {"sent": 1, "id": first["id"], "duplicate": True}
        assert answer.json()["sent"] == 4  # each item as its answer counts it
        assert [m["payload"] for m in delivered(stream, service, channel)] == ["earlier", "a", "b"]


BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("k" * 256, id="256-characters"),
    pytest.param("clé", id="non-ascii"),
    pytest.param("tab\there", id="control-character"),
    pytest.param("del\x7f", id="delete"),
    pytest.param(None, id="null"),
    pytest.param(42, id="number"),
    pytest.param(["a"], id="list"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_bad_idempotency_key_field_is_400_naming_the_rule_and_nothing_of_the_batch_is_sent(
    standalone: Service, key: object
) -> None:
    channel = unique("idem")
    with SSEStream(standalone.base, {"channel": channel}) as stream:
        single = push(standalone, {"channel": channel, "payload": 1, "idempotencyKey": key})
        batch = push(standalone, [{"channel": channel}, {"channel": channel, "idempotencyKey": key}])
        for answer, where in ((single, "idempotencyKey"), (batch, "[1]: idempotencyKey")):
            assert answer.status_code == 400, answer.text
            assert answer.json() == {
                "error": "Invalid idempotency key",
                "details": f"{where} must be 1 to 255 printable ASCII characters",
            }
        assert delivered(stream, standalone, channel) == []


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("k" * 256, id="256-characters"),
        pytest.param("clé".encode().decode("latin-1"), id="non-ascii"),
        pytest.param('""', id="empty-structured-string"),
    ],
)
def test_a_bad_idempotency_key_header_is_400_naming_the_rule(standalone: Service, header: str) -> None:
    answer = push(standalone, {"channel": unique("idem"), "payload": 1}, header)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "error": "Invalid idempotency key",
        "details": "the Idempotency-Key header must be 1 to 255 printable ASCII characters",
    }


def test_a_header_key_that_differs_from_the_field_or_comes_with_a_batch_is_400(standalone: Service) -> None:
    channel = unique("idem")
    with SSEStream(standalone.base, {"channel": channel}) as stream:
        differ = push(standalone, {"channel": channel, "idempotencyKey": "a"}, "b")
        with_batch = push(standalone, [{"channel": channel}], "a")
        assert (differ.status_code, with_batch.status_code) == (400, 400)
        assert "differ" in differ.json()["details"]
        assert "each item of a batch" in with_batch.json()["details"]
        assert delivered(stream, standalone, channel) == []


def test_two_idempotency_key_headers_or_a_bare_comma_are_400_and_a_quoted_comma_is_one_key(
    standalone: Service,
) -> None:
    channel = unique("idem")
    body = json.dumps({"channel": channel, "payload": 1})
    connection = http.client.HTTPConnection("127.0.0.1", standalone.server.port, timeout=10)
    try:
        connection.putrequest("POST", "/")
        for name, value in [("Authorization", f"Bearer {SECRET}"), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body.encode())
        twice = connection.getresponse()
        assert twice.status == 400
        assert "send one Idempotency-Key header" in json.loads(twice.read())["details"]
    finally:
        connection.close()
    key = unique("comma") + ",part"
    assert push(standalone, {"channel": channel}, key).status_code == 400
    first = push(standalone, {"channel": channel, "idempotencyKey": key}).json()
    assert push(standalone, {"channel": channel}, f'"{key}"').json() == {**first, "duplicate": True}


def test_the_longest_key_and_every_printable_character_are_accepted(standalone: Service) -> None:
    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    for key in (unique("key").ljust(255, "k"), unique("key") + printable):
        answers = [push(standalone, {"channel": unique("idem"), "idempotencyKey": key}) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        assert answers[1].json()["duplicate"] is True
        assert answers[1].json()["id"] == answers[0].json()["id"]


# -- expiry ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_ttl() -> Iterator[Service]:
    env = {"REALTIME_SECRET": SECRET, "IMPULSE_IDEMPOTENCY_TTL": str(SHORT_TTL)}
    with LiveServer("wsgi:app", env=env, name="idempotency-ttl") as server:
        yield Service(server, server.url + "/", SECRET)


@pytest.mark.live
def test_a_key_is_forgotten_after_the_ttl_and_delivers_again(short_ttl: Service) -> None:
    channel, key = unique("idem"), unique("key")
    body = {"channel": channel, "payload": "again"}
    with SSEStream(short_ttl.base, {"channel": channel}) as stream:
        sent_at = time.monotonic()
        first = push(short_ttl, body, key).json()
        repeat = push(short_ttl, body, key).json()
        if time.monotonic() - sent_at < SHORT_TTL:
            # The repeat was answered within the TTL of the first push's acceptance.
            assert repeat == {**first, "duplicate": True}
        deadline = time.monotonic() + 30
        while (later := push(short_ttl, body, key).json()).get("duplicate"):
            assert later["id"] == first["id"]
            assert time.monotonic() < deadline, "the key was never forgotten"
            time.sleep(0.1)
        assert later["id"] != first["id"]
        assert [m["id"] for m in delivered(stream, short_ttl, channel)] == [first["id"], later["id"]]


# -- in process ----------------------------------------------------------------------------
def test_impulse_push_with_a_key_delivers_once_over_a_live_server(embedded: Service) -> None:
    channel, key = unique("idem"), unique("key")
    send = embedded.server.url + "/send"
    body = {"channel": channel, "payload": "in process", "idempotencyKey": key}
    with SSEStream(embedded.base, {"channel": channel}) as stream:
        answers = [requests.post(send, json=body, timeout=10) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        assert [a.json()["sent"] for a in answers] == [1, 1]  # the repeat returns the first count
        [message] = delivered(stream, embedded, channel)
        # The HTTP endpoint shares the keys of impulse.push: a repeat over HTTP is a duplicate too.
        over_http = push(embedded, {"channel": channel, "payload": "in process"}, key).json()
        assert over_http == {"sent": 1, "id": message["id"], "duplicate": True}


def test_impulse_publish_tells_a_duplicate_and_refuses_a_bad_key() -> None:
    app = Flask(__name__)
    impulse = Impulse(app, secret="in-process")
    with app.app_context():
        first = impulse.publish("room", 1, idempotency_key="k")
        again = impulse.publish("room", 2, idempotency_key="k")
        other = impulse.publish("room", 1, idempotency_key="other")
        assert first.duplicate is False
        assert again == Published(first.id, first.sent, duplicate=True)
        assert other.id != first.id
        with pytest.raises(PushError, match="idempotency_key must be 1 to 255 printable ASCII"):
            impulse.push("room", 1, idempotency_key="\n")


def test_the_memory_store_is_bounded_and_forgets_the_oldest_key_first() -> None:
    store = IdempotencyStore(ttl=600, max_keys=3)
    for n in range(5):
        store.remember(bytes([n]), Published(f"{n}-0", n))
    assert len(store) == 3
    assert [store.first(bytes([n])) for n in range(2)] == [None, None]
    assert [p.id for n in range(2, 5) if (p := store.first(bytes([n]))) is not None] == ["2-0", "3-0", "4-0"]


def test_idempotency_ttl_zero_turns_deduplication_off() -> None:
    app = Flask(__name__)
    impulse = Impulse(app, secret="in-process", idempotency_ttl=0)
    with app.app_context():
        first, again = (impulse.publish("room", 1, idempotency_key="k") for _ in range(2))
        assert again.duplicate is False
        assert again.id != first.id


# -- ServerClient --------------------------------------------------------------------------
def client_through(proxy: LossyProxy, service: Service, **options: Any) -> ServerClient:
    return ServerClient(proxy.url + "/", token=service.secret, backoff=0.05, max_backoff=0.2, **options)


@pytest.mark.parametrize("lost", ["forward-then-drop", "forward-then-503", "forward-then-hang"])
def test_server_client_retries_a_push_whose_answer_was_lost_and_it_is_delivered_once(
    standalone: Service, lost: str
) -> None:
    channel = unique("idem")
    with SSEStream(standalone.base, {"channel": channel}) as stream, LossyProxy(standalone.base, [lost]) as proxy:
        # A read timeout is how a hung answer is noticed; 3 s leaves a slow machine room.
        with client_through(proxy, standalone, timeout=3.0) as client:
            result = client.publish(channel, {"n": 1})
            assert client.retries == 1
        assert proxy.forwarded == 2
        assert result.duplicate is True  # the retry found the first attempt's push
        [message] = delivered(stream, standalone, channel)
        assert (message["payload"], message["id"], result.sent) == ({"n": 1}, result.id, 1)


def test_server_client_retries_an_honest_503_and_delivers_once(standalone: Service) -> None:
    channel = unique("idem")
    script = ["refuse-503", "refuse-503"]
    with SSEStream(standalone.base, {"channel": channel}) as stream, LossyProxy(standalone.base, script) as proxy:
        with client_through(proxy, standalone) as client:
            assert client.push(channel, "through") == 1
            assert (client.retries, proxy.received, proxy.forwarded) == (2, 3, 1)
        assert [m["payload"] for m in delivered(stream, standalone, channel)] == ["through"]


def test_server_client_retries_a_batch_under_the_same_keys(standalone: Service) -> None:
    channel = unique("idem")
    with SSEStream(standalone.base, {"channel": channel}) as stream:
        with LossyProxy(standalone.base, ["forward-then-drop"]) as proxy, client_through(proxy, standalone) as client:
            results = client.publish_many([{"channel": channel, "payload": n} for n in range(3)])
            assert proxy.forwarded == 2
        assert [r.duplicate for r in results] == [True, True, True]
        assert [m["id"] for m in delivered(stream, standalone, channel)] == [r.id for r in results]


def test_server_client_sends_a_fresh_key_per_push_and_the_given_key_when_told(standalone: Service) -> None:
    channel = unique("idem")
    with SSEStream(standalone.base, {"channel": channel}) as stream, ServerClient(standalone.base, SECRET) as client:
        fresh = [client.publish(channel, "same payload") for _ in range(2)]
        key = unique("given")
        given = [client.publish(channel, "keyed", idempotency_key=key) for _ in range(2)]
        batch = client.publish_many([{"channel": channel, "payload": "keyed", "idempotency_key": key}])
        assert [r.duplicate for r in fresh + given + batch] == [False, False, False, True, True]
        assert [m["payload"] for m in delivered(stream, standalone, channel)] == ["same payload"] * 2 + ["keyed"]


def test_server_client_never_retries_a_4xx_and_gives_up_after_its_attempts(standalone: Service) -> None:
    with (
        LossyProxy(standalone.base, []) as proxy,
        ServerClient(proxy.url + "/", token="wrong secret", backoff=0.01) as client,
    ):
        with pytest.raises(ServerClientError) as refused:
            client.push(unique("idem"), 1)
        assert (refused.value.status, client.retries, proxy.received) == (403, 0, 1)
    # Retry-After: 30 is capped by max_backoff (0.2 s): the test would outlast its timeout otherwise.
    with (
        LossyProxy(standalone.base, ["refuse-503"] * 3, retry_after="30") as proxy,
        client_through(proxy, standalone, max_attempts=3) as client,
    ):
        with pytest.raises(ServerClientError) as unavailable:
            client.push(unique("idem"), 1)
        assert (unavailable.value.status, client.retries, proxy.received, proxy.forwarded) == (503, 2, 3, 0)


def test_server_client_delays_back_off_with_jitter_and_honour_a_capped_retry_after() -> None:
    client = ServerClient("http://127.0.0.1:9/", backoff=0.1, max_backoff=1.0)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (10, 1.0)):
        delays = [client._delay(attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert client._delay(1, 0.7) >= 0.7
    assert client._delay(1, 30.0) <= 1.0


def test_server_client_gives_up_on_an_unreachable_service_within_its_deadline() -> None:
    with LossyProxy("http://127.0.0.1:9", []) as proxy:
        url = proxy.url
    # The proxy is gone: its port refuses connections.
    with ServerClient(url + "/", backoff=0.01, max_backoff=0.02, max_attempts=4) as client:
        with pytest.raises(ServerClientError) as unreachable:
            client.push("x", 1)
        assert (unreachable.value.status, client.retries) == (0, 3)


def test_a_cors_preflight_allows_the_idempotency_key_header(standalone: Service) -> None:
    headers = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    response = requests.options(standalone.base, headers=headers, timeout=5)
    assert response.status_code == 204
    allowed = {name.strip().lower() for name in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert "idempotency-key" in allowed


@pytest.mark.parametrize(
    ("key", "value"), [("idempotency_ttl", -1), ("idempotency_ttl", 0.0001), ("idempotency_max_keys", 0)]
)
def test_idempotency_settings_out_of_range_are_refused_at_start(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"IMPULSE_{key.upper()}"):
        Impulse(Flask(__name__), **{key: value})


def test_server_client_sends_any_valid_key_whole_and_refuses_a_bad_one_before_sending(standalone: Service) -> None:
    channel = unique("idem")
    key = unique("odd") + ' with, a "quote" and \\ a backslash'
    with ServerClient(standalone.base, SECRET) as client:
        first = client.publish(channel, 1, idempotency_key=key)
        assert client.publish(channel, 1, idempotency_key=key) == PushResult(first.id, first.sent, duplicate=True)
        # The header's key is the field's key: the service saw it whole.
        assert push(standalone, {"channel": channel, "idempotencyKey": key}).json()["id"] == first.id
        with pytest.raises(PushError, match="idempotency_key must be 1 to 255 printable ASCII"):
            client.push(channel, 1, idempotency_key="line\nbreak")
        with pytest.raises(PushError, match="idempotency_key must be"):
            client.push_many([{"channel": channel, "idempotency_key": ""}])
