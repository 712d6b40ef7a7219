"""Limits answer with clear JSON errors (docs/protocol.md section 2.7): too many connections (503 +
Retry-After), body too large (413, chunked bodies too), too many pushes (429 + Retry-After)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from flask_impulse.errors import PushError
from flask_impulse.security.ratelimit import PushRateLimiter
from tests.apps.faults import OTHER_SECRET, SECRET
from tests.support.fleet import wait_until
from tests.support.server import LiveServer
from tests.support.streams import SSEStream


@pytest.fixture(scope="module")
def limited() -> Iterator[LiveServer]:
    env = {"IMPULSE_MAX_CONNECTIONS": "3", "IMPULSE_MAX_BODY_SIZE": "1000", "IMPULSE_PUSH_RATE_LIMIT": "5"}
    with LiveServer("tests.apps.faults:app", env=env, health_path="/realtime/health", name="limits") as server:
        yield server


def base(server: LiveServer) -> str:
    return server.url + "/realtime"


def post(server: LiveServer, data: object, secret: str = SECRET, **kwargs: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    return requests.post(base(server), data=data, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.mark.live
def test_connections_beyond_the_worker_limit_are_503_with_retry_after(limited: LiveServer) -> None:
    streams = [SSEStream(base(limited), {"channel": f"full-{index}"}) for index in range(3)]
    try:
        response = requests.get(base(limited), params={"channel": "one-too-many"}, timeout=5)
        assert response.status_code == 503
        assert response.json()["error"] == "Too many connections"
        assert "IMPULSE_MAX_CONNECTIONS" in response.json()["details"]
        assert 1 <= int(response.headers["Retry-After"]) <= 5
        streams.pop().close()
        health = limited.health_url
        wait_until(lambda: requests.get(health, timeout=5).json()["connections"] == 2, 10, "a free slot")
        with SSEStream(base(limited), {"channel": "now-there-is-room"}) as stream:
            assert stream.status == 200
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.live
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_size_limit_is_exact_and_counts_chunked_bodies(limited: LiveServer, chunked: bool) -> None:
    def body(size: int) -> bytes:
        prefix = b'{"channel":"size","payload":"'
        return prefix + b"x" * (size - len(prefix) - 2) + b'"}'

    def send(data: bytes) -> requests.Response:
        # A generator has no length: requests sends it chunked, without Content-Length.
        return post(limited, iter([data[:500], data[500:]]) if chunked else data, secret=OTHER_SECRET)

    time.sleep(1)  # the other publisher's bucket is full again (5 per second)
    assert send(body(1000)).status_code == 200
    response = send(body(1001))
    assert response.status_code == 413
    assert response.json() == {"error": "Payload too large", "details": "the body may hold at most 1000 bytes"}
    assert send(body(900)).status_code == 200  # the worker and the connection pool are fine


@pytest.mark.live
def test_pushes_beyond_the_rate_limit_are_429_with_retry_after(limited: LiveServer) -> None:
    time.sleep(1)  # whatever earlier tests pushed has been paid back: a full bucket of 5
    # A batch costs one token per message: 15 leave the bucket 10 in debt, 2.2 s to pay back.
    batch = "[" + ",".join(['{"channel":"rate","payload":1}'] * 15) + "]"
    assert post(limited, batch).status_code == 200
    refused = post(limited, '{"channel":"rate","payload":2}')
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "Too many requests",
        "details": "this publisher may push 5 messages per second (IMPULSE_PUSH_RATE_LIMIT)",
    }
    wait = int(refused.headers["Retry-After"])
    assert wait >= 1
    # Another publisher has its own bucket.
    assert post(limited, '{"channel":"rate","payload":3}', secret=OTHER_SECRET).status_code == 200
    time.sleep(wait)  # waiting as long as asked is always enough
    assert post(limited, '{"channel":"rate","payload":4}').status_code == 200


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_refills_at_the_rate_and_bursts_one_second() -> None:
    clock = FakeClock()
    limiter = PushRateLimiter(2, clock=clock)
    limiter.charge("a")
    limiter.charge("a")
    with pytest.raises(PushError) as refused:
        limiter.charge("a")
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "1"}
    clock.now = 0.5
    limiter.charge("a")  # one token back after half a second
    clock.now = 100
    for _ in range(2):
        limiter.charge("a")  # never more than the burst, however long the wait
    with pytest.raises(PushError):
        limiter.charge("a")


def test_rate_limiter_lets_a_large_batch_through_and_makes_it_wait_out_the_debt() -> None:
    clock = FakeClock()
    limiter = PushRateLimiter(10, clock=clock)
    limiter.charge("a", cost=100)
    with pytest.raises(PushError) as refused:
        limiter.charge("a")
    assert refused.value.headers == {"Retry-After": "10"}
    clock.now = 8.95  # still 0.5 in debt
    with pytest.raises(PushError):
        limiter.charge("a")
    clock.now = 9.05  # out of debt, but not yet a whole token
    with pytest.raises(PushError):
        limiter.charge("a")
    clock.now = 10  # as long as asked
    limiter.charge("a")


def test_rate_limiter_forgets_only_idle_publishers_when_it_holds_many() -> None:
    clock = FakeClock()
    limiter = PushRateLimiter(1, clock=clock)
    for index in range(10_000):
        limiter.charge(f"idle-{index}")
    clock.now = 5
    limiter.charge("busy")
    assert set(limiter._buckets) == {"busy"}
    limiter.charge("newcomer")
    with pytest.raises(PushError):
        limiter.charge("busy")  # its own state survived


def test_rate_limit_must_not_be_negative() -> None:
    from flask import Flask

    from flask_impulse import Impulse

    app = Flask(__name__)
    app.config["IMPULSE_PUSH_RATE_LIMIT"] = -1
    with pytest.raises(ValueError, match="IMPULSE_PUSH_RATE_LIMIT"):
        Impulse(app)
