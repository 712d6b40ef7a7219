"""The in-memory history is bounded in bytes over all channels (IMPULSE_HISTORY_MAX_BYTES): one
message on each of many distinct channels (a channel per user) holds the worker's memory to the
bound, the oldest leave first, and a client resuming from before them learns of the gap."""

from __future__ import annotations

import uuid

import pytest
import requests

from flask_impulse.broker.history import CHANNEL_OVERHEAD, MESSAGE_OVERHEAD
from tests.conftest import SECRET
from tests.support.fleet import record_figure, rss_kib, worker_pids
from tests.support.server import LiveServer
from tests.support.streams import SSEStream

pytestmark = pytest.mark.live

BOUND = 16 * 1024 * 1024
BATCH = 1000
PAD = "x" * 100
#: The stated overhead: what the worker may hold beyond the bound (allocator slack, the
#: request being parsed, the answers' buffers).
OVERHEAD_KIB = 24 * 1024


def test_history_of_many_channels_stays_within_its_byte_bound_and_evicted_ids_read_as_gaps() -> None:
    env = {"REALTIME_SECRET": SECRET, "IMPULSE_HISTORY_MAX_BYTES": str(BOUND)}
    with LiveServer("wsgi:app", env=env, name="history-bound") as server:
        (worker,) = worker_pids(server)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {SECRET}"
        prefix = f"user-{uuid.uuid4().hex[:8]}"
        # Warm up the push path, then take the baseline.
        session.post(server.url + "/", json=[{"channel": "warm-up", "payload": PAD}] * BATCH, timeout=30)
        baseline = rss_kib(worker)
        # Four times what the bound holds, one message per channel, as the bound counts them
        # (unbounded, they would take about 53 MB: the assertion below fails).
        per_message = MESSAGE_OVERHEAD + CHANNEL_OVERHEAD + 180 + 20
        total = 4 * BOUND // per_message // BATCH * BATCH
        first_id = last_id = ""
        peak = baseline
        for start in range(0, total, BATCH):
            batch = [{"channel": f"{prefix}-{i}", "payload": PAD} for i in range(start, start + BATCH)]
            response = session.post(server.url + "/", json=batch, timeout=30)
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            first_id = first_id or results[0]["id"]
            last_id = results[-1]["id"]
            peak = max(peak, rss_kib(worker))
        growth_kib = peak - baseline
        record_figure("history_bound", messages=total, bound_kib=BOUND // 1024, rss_growth_kib=growth_kib)
        assert growth_kib < BOUND // 1024 + OVERHEAD_KIB

        # The first channel's message was evicted: resuming from before it is a gap.
        params = {"channel": f"{prefix}-0", "lastEventId": _before(first_id)}
        with SSEStream(server.url + "/", params) as stream:
            assert stream.next_event(timeout=10).event == "gap"
        # The last one is retained: resuming from just before it replays it, without a gap.
        params = {"channel": f"{prefix}-{total - 1}", "lastEventId": _before(last_id)}
        with SSEStream(server.url + "/", params) as stream:
            event = stream.next_event(timeout=10)
            assert event.event == "message"
            assert event.id == last_id


def _before(message_id: str) -> str:
    """An id just before ``message_id``: what a client that received its predecessor holds."""
    milliseconds, sequence = (int(part) for part in message_id.split("-"))
    return f"{milliseconds}-{sequence - 1}" if sequence else f"{milliseconds - 1}-999999"
