"""A subscriber that reads nothing while 100,000 messages are pushed to its channel: its stream
is closed when its queue is full, the worker's memory stays bounded, the publisher is never
held up, and a healthy subscriber on the same channel receives every message."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import requests

from tests.conftest import SECRET
from tests.support.fleet import BackgroundReader, record_figure, rss_kib, wait_until, worker_pids
from tests.support.server import LiveServer
from tests.support.streams import SSEStream

pytestmark = pytest.mark.live

MESSAGES = 100_000
BATCH = 1000  # IMPULSE_MAX_BATCH_SIZE's default
PAD = "x" * 100  # about 160 bytes per frame: 16 MB in all, twice the slow queue's byte bound
#: The stated bound: the worker's RSS grows by less than this while the slow client holds
#: its full queue (8 MiB at most, IMPULSE_QUEUE_MAX_BYTES) and the history its 1,000 messages.
RSS_GROWTH_BOUND_KIB = 64 * 1024


def test_a_slow_consumer_is_closed_without_slowing_the_publisher_or_a_healthy_subscriber() -> None:
    with LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="slow") as server:
        (worker,) = worker_pids(server)
        channel = f"slow-{uuid.uuid4().hex[:8]}"
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {SECRET}"
        # Warm up the paths the test uses, then take the baseline.
        session.post(server.url + "/", json=[{"channel": "warm-up", "payload": PAD}] * BATCH, timeout=30)
        baseline = rss_kib(worker)

        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing, soon full
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(f"GET /?channel={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        with BackgroundReader(server.url + "/", {"channel": channel}) as healthy:
            wait_until(lambda: requests.get(server.health_url, timeout=5).json()["connections"] == 2, 20, "2 streams")
            peak, slowest_push, slow_closed_after = baseline, 0.0, None
            for start in range(0, MESSAGES, BATCH):
                # A healthy subscriber keeps up: at most a few batches behind.
                wait_until(lambda start=start: len(healthy.events) >= start - 5 * BATCH, 60, "the healthy reader")
                batch = [{"channel": channel, "payload": {"i": i, "pad": PAD}} for i in range(start, start + BATCH)]
                began = time.monotonic()
                response = session.post(server.url + "/", json=batch, timeout=30)
                slowest_push = max(slowest_push, time.monotonic() - began)
                assert response.status_code == 200
                peak = max(peak, rss_kib(worker))
                if slow_closed_after is None and response.json()["sent"] < 2 * BATCH:
                    slow_closed_after = start + BATCH
            wait_until(lambda: len(healthy.events) >= MESSAGES, 60, "the healthy reader to get everything")
            assert not healthy.ended, healthy.error
            assert [json.loads(event.data)["payload"]["i"] for event in healthy.events] == list(range(MESSAGES))
            assert requests.get(server.health_url, timeout=5).json()["connections"] == 1

        # The slow client's stream was closed: what it can still read ends.
        slow.settimeout(10)
        received = b""
        try:
            while chunk := slow.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        finally:
            slow.close()
        assert slow_closed_after is not None
        last_id = [line for line in received.split(b"\n") if line.startswith(b"id: ")][-1][4:].decode()
        # Coming back with its last id, it learns that it missed more than history holds.
        with SSEStream(server.url + "/", {"channel": channel}, headers={"Last-Event-ID": last_id}) as back:
            assert back.next_event().event == "gap"
        record_figure(
            "slow_consumer",
            messages=MESSAGES,
            rss_baseline_mib=round(baseline / 1024, 1),
            rss_peak_mib=round(peak / 1024, 1),
            rss_growth_mib=round((peak - baseline) / 1024, 1),
            slow_closed_after_messages=slow_closed_after,
            slowest_batch_push_s=round(slowest_push, 3),
        )
        assert peak - baseline < RSS_GROWTH_BOUND_KIB
