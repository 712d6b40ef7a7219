"""Churn soak, bounded in time: 20,000 streams open and close (half with a FIN, half with an
RST, each on a channel of its own), and afterwards the registry is empty and the worker's
memory is back within 10% of its baseline."""

from __future__ import annotations

import selectors
import socket
import struct
import time

import pytest
import requests

from tests.conftest import SECRET
from tests.support.fleet import record_figure, rss_kib, wait_until, worker_pids
from tests.support.server import LiveServer

pytestmark = pytest.mark.live

CYCLES = 20_000
WARM_UP = 2_000
PARALLEL = 32


def churn(port: int, cycles: int, first: int, timeout: float = 240) -> None:
    """``cycles`` connect/disconnect cycles, ``PARALLEL`` at a time, from one selector loop
    (threads would spend the test's CPU on the GIL, which the server needs)."""
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytes] = {}
    next_index, done = first, 0
    deadline = time.monotonic() + timeout

    def start_cycle() -> None:
        nonlocal next_index
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        selector.register(client, selectors.EVENT_WRITE, next_index)
        received[client] = b""
        next_index += 1

    def end_cycle(client: socket.socket, index: int) -> None:
        nonlocal done
        selector.unregister(client)
        if index % 2:  # an abrupt end: RST instead of FIN
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        del received[client]
        done += 1
        if next_index < first + cycles:
            start_cycle()

    try:
        for _ in range(min(PARALLEL, cycles)):
            start_cycle()
        while done < cycles:
            assert time.monotonic() < deadline, f"only {done} of {cycles} cycles before the deadline"
            for key, events in selector.select(timeout=1):
                client, index = key.fileobj, key.data
                assert isinstance(client, socket.socket)
                if events & selectors.EVENT_WRITE:
                    client.sendall(f"GET /?channel=soak-{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    selector.modify(client, selectors.EVENT_READ, index)
                    continue
                chunk = client.recv(4096)
                assert chunk, "the stream closed before it opened"
                received[client] += chunk
                if b"Connected to channel" in received[client]:
                    assert received[client].startswith(b"HTTP/1.1 200")
                    end_cycle(client, index)
    finally:
        for client in list(received):
            client.close()
        selector.close()


def test_20000_connect_disconnect_cycles_leave_no_connection_and_no_memory_behind() -> None:
    with LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="soak") as server:
        (worker,) = worker_pids(server)

        def connections() -> int:
            return int(requests.get(server.health_url, timeout=5).json()["connections"])

        churn(server.port, WARM_UP, first=0)  # the worker's pools and caches reach their size
        wait_until(lambda: connections() == 0, 20, "the warm-up streams to be released")
        baseline = rss_kib(worker)
        started = time.monotonic()
        churn(server.port, CYCLES, first=WARM_UP)
        elapsed = time.monotonic() - started
        wait_until(lambda: connections() == 0, 20, "every stream to be released")
        final = rss_kib(worker)
        record_figure(
            "churn_soak",
            cycles=CYCLES,
            seconds=round(elapsed, 1),
            cycles_per_second=round(CYCLES / elapsed),
            rss_baseline_mib=round(baseline / 1024, 1),
            rss_final_mib=round(final / 1024, 1),
            rss_change_percent=round(100 * (final - baseline) / baseline, 1),
        )
        assert worker_pids(server) == [worker]
        assert abs(final - baseline) <= baseline * 0.10
