"""What a live server's worker processes hold, read with psutil: which worker took which streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psutil

from .fleet import worker_pids
from .server import LiveServer
from .streams import ManyStreams


def all_connected(buffers: dict[int, bytes]) -> bool:
    return all(b"Connected" in buffer for buffer in buffers.values())


def streams_per_worker(server: LiveServer) -> dict[int, int]:
    """Established connections each worker holds on the server's port."""
    counts = {}
    for pid in worker_pids(server):
        connections = psutil.Process(pid).net_connections(kind="tcp")
        counts[pid] = sum(1 for c in connections if c.status == "ESTABLISHED" and c.laddr.port == server.port)
    return counts


def kill_hard(server: LiveServer) -> None:
    """SIGKILL the gunicorn master and its workers at once: a crash, with no drain."""
    assert server.process is not None
    master = psutil.Process(server.process.pid)
    for process in [*master.children(recursive=True), master]:
        process.kill()
    psutil.wait_procs([master], timeout=10)


@contextmanager
def streams_on_every_worker(
    server: LiveServer, url: str, channel: str, batch: int = 100
) -> Iterator[list[ManyStreams]]:
    """Groups of ``batch`` streams, opened until every worker holds some (gunicorn hands each
    connection to whichever worker accepts it first, so one group may land on one worker)."""
    with ExitStack() as stack:
        groups = []
        for _ in range(10):
            group = stack.enter_context(ManyStreams(url, batch, {"channel": channel}))
            group.read_until(all_connected, timeout=30)
            groups.append(group)
            if all(count > 0 for count in streams_per_worker(server).values()):
                break
        assert all(count > 0 for count in streams_per_worker(server).values())
        yield groups
