"""Bad input gets a clear JSON error, and the server keeps delivering afterwards."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.conftest import Service
from tests.support.streams import SSEStream

MiB = 1024 * 1024


def assert_still_delivers(service: Service) -> None:
    channel = f"alive-{uuid.uuid4().hex[:8]}"
    with SSEStream(service.base, {"channel": channel}) as stream:
        assert service.push({"channel": channel, "payload": "still here"}).json()["sent"] == 1
        assert stream.messages(1) == [{"channel": channel, "payload": "still here"}]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json at all",
        b'{"channel": "c", "payload": NaN}',
        b"\xff\xfe\x00garbage",
        b'{"channel": "c"}}',
    ],
)
def test_malformed_json_is_400(service: Service, body: bytes) -> None:
    response = requests.post(service.base, data=body, headers={"Authorization": f"Bearer {service.secret}"}, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": "Invalid JSON body"}
    assert_still_delivers(service)


@pytest.mark.parametrize(
    "body",
    [
        [],
        [{"channel": "ok", "payload": 1}, {"payload": 2}],
        {"channel": ["list"]},
        {"channel": "c", "audience": {"tokens": [None]}},
        {"channel": "c", "audience": []},
    ],
)
def test_wrong_shapes_are_400_and_name_the_problem(service: Service, body: object) -> None:
    response = service.push(body)
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid request body"
    assert response.json()["details"]
    assert_still_delivers(service)


def test_a_bad_item_rejects_the_whole_batch_and_names_its_index(service: Service) -> None:
    channel = f"batch-{uuid.uuid4().hex[:8]}"
    with SSEStream(service.base, {"channel": channel}) as stream:
        response = service.push([{"channel": channel, "payload": 1}, {"channel": channel, "audience": {"topic": 5}}])
        assert response.status_code == 400
        assert response.json()["details"].startswith("[1]: ")
        stream.assert_silent(0.3)


def test_body_over_the_limit_is_413(service: Service) -> None:
    body = b'{"channel": "c", "payload": "' + b"x" * MiB + b'"}'
    response = requests.post(service.base, data=body, headers={"Authorization": f"Bearer {service.secret}"}, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"] == "Payload too large"
    assert_still_delivers(service)


def test_chunked_body_over_the_limit_is_413(service: Service) -> None:
    def chunks():  # no Content-Length: the server must count
        for _ in range(17):
            yield b"x" * 65536

    response = requests.post(
        service.base, data=chunks(), headers={"Authorization": f"Bearer {service.secret}"}, timeout=10
    )
    assert response.status_code == 413
    assert_still_delivers(service)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channel", "bad\nchannel"),
        ("channel", "bad\r\nSet-Cookie: x"),
        ("channel", "nul\x00byte"),
        ("channel", "c" * 257),
        ("topic", "bad\ntopic"),
        ("topic", "t" * 257),
        ("tokens", "bad\rtoken"),
        ("tokens", "k" * 4097),
    ],
)
def test_control_characters_and_overlong_values_are_400_on_push(service: Service, field: str, value: str) -> None:
    body: dict[str, object] = {"channel": "c", "payload": 1}
    if field == "channel":
        body["channel"] = value
    else:
        body["audience"] = {field: value}
    response = service.push(body)
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid request body"
    assert_still_delivers(service)


@pytest.mark.parametrize(
    "params",
    [
        {"channel": "bad\nchannel"},
        {"channel": "c" * 257},
        {"channel": "c", "topic": "bad\r\ntopic"},
        {"channel": "c", "topic": "t" * 257},
        {"channel": "c", "token": "bad\x7ftoken"},
        {"channel": "c", "token": "k" * 4097},
    ],
)
def test_control_characters_and_overlong_values_are_400_on_subscribe(service: Service, params: dict[str, str]) -> None:
    response = requests.get(service.base, params=params, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid query parameter"
    assert response.json()["details"].startswith(f"the {list(params)[-1]} query parameter ")
    assert_still_delivers(service)
