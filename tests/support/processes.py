"""What a live server's worker processes hold, read with psutil: which worker took which streams."""

from __future__ import annotations

import psutil

from .server import LiveServer


def worker_pids(server: LiveServer) -> set[int]:
    assert server.process is not None
    return {child.pid for child in psutil.Process(server.process.pid).children()}


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
