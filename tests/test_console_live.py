"""The operator console on a live gunicorn with two gevent workers and Redis: off without its token,
refused without or with a wrong one, a snapshot that counts the whole instance, and a push
form that answers as POST BASE does; the token never reaches the log."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests

from tests.conftest import SECRET, Service
from tests.support.redis import RedisServer
from tests.support.secrets import CONSOLE_TOKEN
from tests.support.server import LiveServer
from tests.support.streams import SSEStream

pytestmark = [pytest.mark.live, pytest.mark.redis]

CONSOLE = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}


@pytest.fixture(scope="module")
def console(redis_server: RedisServer) -> Iterator[Service]:
    env = {
        "REALTIME_SECRET": SECRET,
        "IMPULSE_CONSOLE_TOKEN": CONSOLE_TOKEN,
        "IMPULSE_PRESENCE_CHANNELS": "room:*",
        # Two workers share pushes through Redis, as two instances would.
        "IMPULSE_REDIS_URL": redis_server.url,
        # A short queue, so that a client that reads nothing is dropped after a few megabytes.
        "IMPULSE_QUEUE_MAX_MESSAGES": "20",
    }
    with LiveServer(env=env, workers=2, name="console", access_log=True) as server:
        yield Service(server, server.url + "/", SECRET)


def snapshot(service: Service) -> dict[str, Any]:
    answer = requests.get(service.base + "console/snapshot", headers=CONSOLE, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Poll ``condition`` until it holds; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_the_console_is_an_unknown_path_without_its_token(standalone: Service) -> None:
    for path in ("console", "console/snapshot", "console/console.js"):
        answer = requests.get(standalone.base + path, headers=CONSOLE, timeout=5)
        assert (answer.status_code, answer.json()) == (404, {"error": "Not found"})
        assert "script-src" not in answer.headers.get("Content-Security-Policy", "")
    assert requests.post(standalone.base + "console/push", json={"channel": "x"}, timeout=5).status_code == 404


@pytest.mark.parametrize("path", ["console", "console/snapshot"])
def test_no_token_is_401_and_a_wrong_one_403(console: Service, path: str) -> None:
    url = console.base + path
    missing = requests.get(url, timeout=5, allow_redirects=False)
    assert missing.status_code == 401 and missing.json()["error"] == "Console token required"
    wrong = requests.get(url, headers={"Authorization": "Bearer not-the-console-token"}, timeout=5)
    assert (wrong.status_code, wrong.json()) == (403, {"error": "Invalid token"})
    assert requests.get(url, params={"token": "nope"}, timeout=5, allow_redirects=False).status_code == 403
    secret = requests.get(url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=5)
    assert secret.status_code == 403  # the push secret opens nothing here


def test_the_snapshot_counts_every_worker_of_the_instance(console: Service) -> None:
    channel = "room:live"
    with ExitStack() as stack:
        streams = [
            stack.enter_context(SSEStream(console.base, {"channel": channel, "clientId": f"member-{i % 2}"}))
            for i in range(4)
        ]
        # Two workers: the kernel hands the streams to either; the snapshot of whichever
        # answers counts them all.
        wait_for(lambda: snapshot(console)["instance"]["connections"] == 4, "4 connections in the snapshot")
        before = snapshot(console)["totals"]
        for n in range(5):
            assert console.push({"channel": channel, "payload": n}).json()["sent"] == 4
        for stream in streams:
            assert [m["payload"] for m in stream.messages(5)] == [0, 1, 2, 3, 4]

        def counted() -> dict[str, Any] | None:
            figures = snapshot(console)
            totals = figures["totals"]
            done = totals["pushes"] - before["pushes"] == 5 and totals["deliveries"] - before["deliveries"] == 20
            # The other worker's figures are at most a second old: wait for them too.
            return (
                figures
                if done and figures["channels"] == [{"channel": channel, "connections": 4, "members": 2}]
                else None
            )

        figures = wait_for(counted, "5 pushes, 20 deliveries and the channel's 4 streams in the instance's figures")
    assert figures["instance"]["workers"] == 2
    backplane = figures["backplane"]
    assert backplane["kind"] == "redis" and backplane["status"] == "ok" and backplane["latencyMs"] >= 0
    assert figures["presence"] == {"patterns": ["room:*"]}
    rates = figures["rates"]
    assert rates["interval"] == 1.0 and len(rates["samples"]) <= 300
    assert all(set(rate) == {"time", "pushes", "deliveries", "drops"} for rate in rates["samples"])
    # The rates climb to the pushes once the samples of both workers hold them.
    wait_for(
        lambda: sum(rate["pushes"] for rate in snapshot(console)["rates"]["samples"]) >= 5,
        "the pushes in the one-second rates",
    )


def test_the_console_push_is_the_push_endpoint(console: Service) -> None:
    channel = "room:pushed"
    url = console.base + "console/push"
    with SSEStream(console.base, {"channel": channel}) as stream:
        headers = {**CONSOLE, "Idempotency-Key": "live-console-1"}
        body = {"channel": channel, "payload": "from the console"}
        answer = requests.post(url, json=body, headers=headers, timeout=5)
        assert answer.status_code == 200 and answer.json()["sent"] == 1
        [message] = stream.messages(1)
        assert message == {"channel": channel, "payload": "from the console"}
        again = requests.post(url, json=body, headers=headers, timeout=5)
        assert again.json() == {**answer.json(), "duplicate": True}
        stream.assert_silent(0.5)
    bad = requests.post(url, data=b'{"channel": ', headers={**CONSOLE, "Content-Type": "application/json"}, timeout=5)
    assert (bad.status_code, bad.json()) == (400, {"error": "Invalid JSON body"})
    unnamed = requests.post(url, json={"payload": 1}, headers=CONSOLE, timeout=5)
    assert unnamed.status_code == 400 and unnamed.json()["error"] == "Invalid request body"
    assert requests.post(url, json={"channel": channel}, timeout=5).status_code == 401


def test_the_token_in_a_query_never_reaches_the_access_log(console: Service) -> None:
    opened = requests.get(console.base + "console", params={"token": CONSOLE_TOKEN}, timeout=5, allow_redirects=False)
    assert opened.status_code == 303 and opened.headers["Location"] == "/console"
    assert CONSOLE_TOKEN not in opened.headers["Set-Cookie"]
    wait_for(lambda: "/console?token=[redacted]" in console.server.log(), "the access log line")
    assert CONSOLE_TOKEN not in console.server.log()


def test_a_slow_consumer_dropped_is_counted(console: Service) -> None:
    before = snapshot(console)["totals"]["drops"]
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing: its buffers soon fill
    try:
        slow.connect(("127.0.0.1", console.server.port))
        slow.sendall(b"GET /?channel=flood HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: snapshot(console)["instance"]["connections"] == 1, "the slow stream")
        batch = [{"channel": "flood", "payload": "x" * 16_000}] * 50  # 800 kB a request
        # At most 40 batches (32 MB): the socket's buffers and a queue of 20 hold far less.
        for _ in range(40):
            assert console.push(batch).status_code == 200
            if snapshot(console)["totals"]["drops"] > before:
                break
        wait_for(lambda: snapshot(console)["totals"]["drops"] == before + 1, "the drop in the instance's totals")
        wait_for(lambda: snapshot(console)["instance"]["connections"] == 0, "the dropped stream to be gone")
    finally:
        slow.close()
