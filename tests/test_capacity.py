"""Capacity: one gevent worker of the standalone service holds thousands of streams, and a
broadcast reaches every one of them exactly once.

The test process holds one socket per stream too, so it lifts its own soft limit on open
files to the hard one (the servers it starts inherit it) and skips when the hard limit
cannot fit the streams. Nothing here is timed: how fast is for the benchmark suite.
"""

from __future__ import annotations

import resource
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import SECRET, Service
from tests.support.server import LiveServer
from tests.support.streams import ManyStreams

pytestmark = pytest.mark.live

#: Descriptors the test process needs besides its streams (pytest, logs, the push connection).
SPARE_FILES = 200


@pytest.fixture(scope="module")
def one_worker() -> Iterator[Service]:
    """The standalone service on one gevent worker, started after the fd limit is lifted."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        with LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, workers=1, name="capacity") as server:
            yield Service(server, server.url + "/", SECRET)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("count", [1000, 10_000])
def test_one_worker_delivers_a_broadcast_to_every_open_stream(one_worker: Service, count: int) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + SPARE_FILES:
        pytest.skip(f"the open-file limit ({soft}) cannot hold {count} streams in the test process")
    channel = f"capacity-{uuid.uuid4().hex[:8]}"
    with ManyStreams(one_worker.base, count, {"channel": channel}, timeout=60) as streams:
        streams.read_until(lambda buffers: all(b"Connected to channel" in b for b in buffers.values()), 120)
        assert one_worker.health()["connections"] >= count

        answer = one_worker.push({"channel": channel, "payload": {"broadcast": count}})
        assert answer.status_code == 200
        assert answer.json()["sent"] == count

        expected = f'"payload":{{"broadcast":{count}}}'.encode()
        streams.read_until(lambda buffers: all(expected in b for b in buffers.values()), 120)
        assert streams.count_in_each(expected) == [1] * count
        assert streams.count_in_each(b"data: ") == [1] * count
