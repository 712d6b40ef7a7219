"""Graceful drain: on SIGTERM, SIGINT, SIGQUIT and gunicorn worker restarts, every stream ends
within the drain window (IMPULSE_DRAIN_WINDOW, 2 s) with a jittered ``retry:`` hint, after the
messages accepted before the signal; clients come back to the restarted server or new worker."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from flask_impulse.server.service import create_app
from tests.conftest import SECRET
from tests.support.fleet import StreamFleet, record_figure, wait_for_workers, wait_until, worker_pids
from tests.support.resuming_client import ResumingClient
from tests.support.server import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.node]

# A drained stream's last bytes: the retry hint, then the end of the chunked body.
FINAL_RETRY = re.compile(rb"retry: (\d+)\n\n\r\n0\r\n\r\n$")
STREAMS = 1000
RETRY_MS = 1000  # IMPULSE_RETRY_MS's default: drain hints fall in [RETRY_MS, 2 * RETRY_MS]


def push(server: LiveServer, body: object) -> requests.Response:
    response = requests.post(server.url + "/", json=body, headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response


def connections(server: LiveServer) -> int:
    return int(requests.get(server.health_url, timeout=5).json()["connections"])


def assert_drained(fleet: StreamFleet, payloads: list[int]) -> list[int]:
    """Every stream got ``payloads``, then a retry hint, then its end; return the hints."""
    hints = []
    for index in range(len(fleet.socks)):
        status, _, events = fleet.decoded(index)
        assert status == 200
        assert [event.data.count('"payload"') for event in events] == [1] * len(payloads), index
        assert [int(event.data.rsplit(":", 1)[1].rstrip("}")) for event in events] == payloads, index
        final = FINAL_RETRY.search(bytes(fleet.data[index]))
        assert final is not None, f"stream {index} ended without a retry hint: {bytes(fleet.data[index][-200:])!r}"
        hints.append(int(final.group(1)))
    assert all(RETRY_MS <= hint <= 2 * RETRY_MS for hint in hints)
    return hints


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="drain") as live:
        yield live


def test_sigterm_closes_1000_streams_in_the_window_and_clients_reconnect_to_the_restarted_server(
    server: LiveServer,
) -> None:
    channel = f"drain-{uuid.uuid4().hex[:8]}"
    port = server.port
    with (
        StreamFleet(server.url + "/", STREAMS, {"channel": channel}) as fleet,
        ResumingClient(server.url + "/", channel, 6, timeout=90) as official,
    ):
        official.next_line("open")
        wait_until(lambda: connections(server) == STREAMS + 1, 30, "every stream to open")
        # Accepted before the signal, so delivered before each stream ends.
        ids = [
            result["id"]
            for result in push(server, [{"channel": channel, "payload": i} for i in range(3)]).json()["results"]
        ]
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        fleet.pump(lambda f: f.all_ended(), timeout=30)
        ends = sorted(fleet.ended_at.values())
        hints = assert_drained(fleet, [0, 1, 2])
        assert len(set(hints)) > 1, "retry hints carry jitter"
        assert server.process is not None
        server.process.wait(timeout=30)
        record_figure(
            "drain_sigterm",
            streams=STREAMS,
            first_end_s=round(ends[0] - signalled, 3),
            last_end_s=round(ends[-1] - signalled, 3),
            process_exit_s=round(time.monotonic() - signalled, 3),
            retry_hint_ms=[min(hints), max(hints)],
        )
        official.wait_received(3)

        # The service comes back on the same port; clients reconnect with their Last-Event-ID.
        with (
            LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="drain-restarted", port=port) as restarted,
            StreamFleet(restarted.url + "/", STREAMS, {"channel": channel}, {"Last-Event-ID": ids[-1]}) as back,
        ):
            # EventSource retries by itself, at its retry hint, until the service is back.
            official.next_line("open", timeout=60)
            wait_until(lambda: connections(restarted) == STREAMS + 1, 30, "every client to reconnect")
            push(restarted, [{"channel": channel, "payload": i} for i in range(3, 6)])
            back.pump(lambda f: f.count_with(b'"payload":5') == STREAMS, timeout=30)
            for index in range(STREAMS):
                _, _, events = back.decoded(index)
                # The in-memory history went with the old process: the id is a gap there.
                assert [event.event for event in events] == ["gap", "message", "message", "message"]
            official.next_line("done")
    assert official.received == list(range(6))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_sigint_and_sigquit_drain_like_sigterm(server: LiveServer, signum: int) -> None:
    # gunicorn's arbiter turns SIGINT and SIGQUIT into a quick shutdown (SIGQUIT to workers,
    # which would exit 0.1 s later and cut every stream); the workers drain instead.
    channel = f"quit-{uuid.uuid4().hex[:8]}"
    with StreamFleet(server.url + "/", 50, {"channel": channel}) as fleet:
        wait_until(lambda: connections(server) == 50, 30, "every stream to open")
        push(server, {"channel": channel, "payload": 7})
        server.signal(signum)
        fleet.pump(lambda f: f.all_ended(), timeout=30)
        assert_drained(fleet, [7])


def test_sigint_to_the_worker_itself_drains(server: LiveServer) -> None:
    # Ctrl-C in a terminal signals the whole process group, workers included.
    channel = f"ctrlc-{uuid.uuid4().hex[:8]}"
    with StreamFleet(server.url + "/", 20, {"channel": channel}) as fleet:
        wait_until(lambda: connections(server) == 20, 30, "every stream to open")
        (worker,) = worker_pids(server)
        os.kill(worker, signal.SIGINT)
        fleet.pump(lambda f: f.all_ended(), timeout=30)
        assert_drained(fleet, [])


def test_sighup_reload_drains_and_clients_reach_the_new_worker(server: LiveServer) -> None:
    channel = f"hup-{uuid.uuid4().hex[:8]}"
    (old_worker,) = worker_pids(server)
    with StreamFleet(server.url + "/", 20, {"channel": channel}) as fleet:
        wait_until(lambda: connections(server) == 20, 30, "every stream to open")
        server.signal(signal.SIGHUP)
        fleet.pump(lambda f: f.all_ended(), timeout=30)
        assert_drained(fleet, [])
        # Not kept alive for another request: the reconnection must reach the new worker.
        for sock in fleet.socks:
            sock.settimeout(10)
            assert sock.recv(1) == b""
    wait_for_workers(server, 1, other_than=frozenset({old_worker}))
    wait_until(lambda: old_worker not in worker_pids(server), 30, "the old worker to exit")
    with StreamFleet(server.url + "/", 20, {"channel": channel}) as back:
        wait_until(lambda: connections(server) == 20, 30, "every client to reconnect")
        assert push(server, {"channel": channel, "payload": 1}).json()["sent"] == 20
        back.pump(lambda f: f.count_with(b'"payload":1') == 20, timeout=30)


def test_a_max_requests_restart_drains_the_streams() -> None:
    env = {"REALTIME_SECRET": SECRET}
    with LiveServer("wsgi:app", env=env, name="drain-maxreq", extra_args=["--max-requests", "40"]) as server:
        (old_worker,) = worker_pids(server)
        channel = f"maxreq-{uuid.uuid4().hex[:8]}"
        with StreamFleet(server.url + "/", 20, {"channel": channel}) as fleet:
            for _ in range(25):  # with the 20 streams, past --max-requests: the worker restarts
                requests.get(server.health_url, timeout=10)
            fleet.pump(lambda f: f.all_ended(), timeout=30)
            assert_drained(fleet, [])
        wait_for_workers(server, 1, other_than=frozenset({old_worker}))


def test_a_stream_asked_of_a_draining_worker_is_sent_elsewhere_not_refused() -> None:
    # EventSource gives up for good on a 503: a draining worker answers 200 with only a
    # retry hint, so the client comes back (to a live worker) after the hint.
    app = create_app({"IMPULSE_SECRET": SECRET})
    app.extensions["impulse"].broker.drain().join(5)
    response = app.test_client().get("/", query_string={"channel": "late"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.data.startswith(b"retry: ")
    assert RETRY_MS <= int(response.data.removeprefix(b"retry: ").strip()) <= 2 * RETRY_MS
