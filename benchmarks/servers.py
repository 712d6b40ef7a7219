"""The brokers under test, and what /proc says about them.

Each broker runs as its own process tree on a free loopback port, started fresh for each
scenario so that one scenario's leftovers (memory, garbage, open sockets) never weigh on
the next. Every process is in its own session, so stopping a broker stops its workers
too, on success and failure alike.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.server import free_port

if TYPE_CHECKING:
    from .profile import Recorder

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
LOG_DIR = BENCH_DIR / "results" / "logs"
REFERENCE_PACKAGE = "@impulselab/realtime-service"
REFERENCE_CLI = BENCH_DIR / "node_modules" / "@impulselab" / "realtime-service" / "dist" / "cli.js"
_TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


def ensure_reference_installed() -> None:
    """``npm ci`` the reference broker into benchmarks/node_modules, from the lock file, once."""
    if REFERENCE_CLI.exists():
        return
    print(f"installing {REFERENCE_PACKAGE} from npm into {BENCH_DIR} ...", flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH_DIR, check=True)


def raise_open_file_limit() -> int:
    """Soft fd limit up to the hard one, for this process and the brokers it starts."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class PortTaken(RuntimeError):
    """The broker exited at start because another process holds its port."""


#: How Node, gunicorn and Redis say that a port is taken.
_PORT_TAKEN = ("EADDRINUSE", "Connection in use", "Address already in use")


class Server:
    """A broker process tree: its address, its CPU time and its memory."""

    def __init__(self, name: str, command: list[str], port: int, *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.env = {**os.environ, **(env or {})}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        #: Processes the broker depends on (Redis for the cluster), counted in its CPU and memory.
        self.companions: list[Server] = []
        #: With ``--profile``: py-spy, run over each timed window.
        self.recorder: Recorder | None = None

    def start(self, ready_path: str, timeout: float = 30) -> Server:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child holds it; closed in stop()
        self._log = log
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log()
                self.stop()
                taken = any(sign in output for sign in _PORT_TAKEN)
                raise (PortTaken if taken else RuntimeError)(f"{self.name} exited at start; log:\n{output}")
            if self._answers(ready_path) if ready_path else self._accepts():
                if not self._listeners_are_ours():
                    self.stop()
                    raise PortTaken(f"{self.name}: another process listens on port {self.port} too")
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s; log:\n{self.log()}")

    def _accepts(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def _answers(self, path: str) -> bool:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            connection.request("GET", path)
            return connection.getresponse().status < 500
        except OSError:
            return False
        finally:
            connection.close()

    def _listeners_are_ours(self) -> bool:
        """Whether every socket listening on the port belongs to this broker: the reference
        binds every interface, which Linux allows beside another process's 127.0.0.1 on the
        same port, and that one would then get the traffic."""
        listening = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as file:
                for line in file.readlines()[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == self.port:  # LISTEN
                        listening.add(f"socket:[{fields[9]}]")
        ours = set()
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        ours.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        return bool(listening) and listening <= ours

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    # -- /proc ------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """The process, every descendant (gunicorn's workers) and the companions' trees."""
        if self.process is None:
            return []
        roots = [self.process.pid] + [c.process.pid for c in self.companions if c.process is not None]
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as file:
                    stat = file.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        tree, todo = [], roots
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def worker_pids(self) -> list[int]:
        """The processes that serve streams: gunicorn's workers, or the process itself."""
        if self.process is None:
            return []
        own = set(self.pids()) - {c.process.pid for c in self.companions if c.process is not None}
        children = [pid for pid in own if pid != self.process.pid and _parent(pid) == self.process.pid]
        return children or [self.process.pid]

    def cpu_seconds(self) -> float:
        """user+sys of the whole tree, every thread (V8's GC threads, for one).

        Each task's schedstat counts nanoseconds on a CPU; utime+stime in /proc/PID/stat
        counts 10 ms ticks and also covers threads that have exited. The larger is taken,
        so an exited thread's time is not lost and a short run is not rounded away.
        """
        total = 0.0
        for pid in self.pids():
            precise = 0.0
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                        precise += int(file.read().split()[0]) / 1e9
                with open(f"/proc/{pid}/stat", "rb") as file:
                    stat = file.read()
            except (OSError, ValueError, IndexError):
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            ticks = (int(fields[11]) + int(fields[12])) / _TICKS
            total += precise if precise >= ticks - 0.02 else ticks
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the whole tree."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as file:
                    for line in file:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                continue
        return total

    def reload(self) -> None:
        """SIGHUP to gunicorn's master: new workers start, the old ones drain their streams."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGHUP)

    def stop(self, timeout: float = 10) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        # Whatever is left of the group (a worker that outlived its master): kill it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait(5)
        self._log.close()


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return 0
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def on_a_free_port(start: Callable[[int], Server], attempts: int = 3) -> Server:
    """``start(port)`` on a port the OS just gave out. Another process can take it between
    the probe and the broker's bind (on a shared machine; and the reference binds every
    interface, where the probe bound 127.0.0.1 only): then the broker is started again on
    another port."""
    for _ in range(attempts - 1):
        try:
            return start(free_port())
        except PortTaken as exc:
            print(f"   port taken, starting again: {str(exc).splitlines()[0]}", flush=True)
    return start(free_port())


def reference(secret: str) -> Server:
    def start(port: int) -> Server:
        command = ["node", str(REFERENCE_CLI), "--port", str(port), "--secret", secret]
        return Server("reference", command, port).start(ready_path="")

    return on_a_free_port(start)


def impulse_cli() -> str:
    """The ``flask-impulse`` console script beside this Python (a virtualenv that is not
    activated), or on PATH."""
    beside = Path(sys.executable).with_name("flask-impulse")
    found = str(beside) if beside.exists() else shutil.which("flask-impulse")
    if found is None:
        raise RuntimeError("no flask-impulse command: pip install -e . in this checkout")
    return found


def impulse(
    secret: str, *, workers: int = 1, redis_url: str | None = None, env: dict[str, str] | None = None
) -> Server:
    """The standalone service as its users start it: the ``flask-impulse`` CLI with its
    defaults (gunicorn, gevent workers, no access log line per request), on loopback only (the CLI binds
    0.0.0.0 unless told). ``env`` reaches the service as its environment (``IMPULSE_*``)."""
    options = ["--workers", str(workers)] if workers != 1 else []
    if redis_url:
        options += ["--redis-url", redis_url]
    # This checkout's package, whatever the virtualenv's flask-impulse was installed from.
    env = {"PYTHONPATH": str(ROOT), **(env or {})}
    name = "flask-impulse" if workers == 1 else f"flask-impulse-{workers}w"

    def start(port: int) -> Server:
        command = [impulse_cli(), "--host", HOST, "--port", str(port), "--secret", secret, *options]
        return Server(name, command, port, env=env).start(ready_path="/health")

    return on_a_free_port(start)


def redis() -> Server:
    def start(port: int) -> Server:
        command = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        return Server("redis", command, port).start(ready_path="")

    return on_a_free_port(start)


def has_redis_backplane(redis_url: str) -> bool:
    """Whether this checkout's service accepts IMPULSE_REDIS_URL (the Redis backplane exists)."""
    probe = (
        "from flask_impulse.server.service import create_app\n"
        f"create_app({{'IMPULSE_SECRET': 'probe', 'IMPULSE_REDIS_URL': {redis_url!r}}})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    return result.returncode == 0
