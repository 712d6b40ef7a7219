"""A real redis-server on a free loopback port, for the backplane tests.

No persistence by default (``--save "" --appendonly no``): a restart starts from an empty
dataset, the harshest case for resume. ``appendonly=True`` turns AOF on (fsync every second,
Redis's default), which a restart replays. ``stop()`` and ``start()`` keep the port, so that
the services under test see Redis go away and come back at the same address.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from flask_impulse.broker.redis import RedisBackplane

from .server import LOG_DIR, free_port


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, *, appendonly: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        #: Read by each start(): set it between a stop() and a start() to change persistence.
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        LOG_DIR.mkdir(exist_ok=True)
        self.log_path = LOG_DIR / f"redis-{self.port}.log"

    def start(self, timeout: float = 10) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--maxclients",
            "1000",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = self.client()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited ({self.process.returncode}); see {self.log_path}")
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def stop(self) -> None:
        """Stop at once, as a crash or a restart would look to the services."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to redis-server (SIGSTOP and SIGCONT: a stall, as a long fork or a
        paused VM looks to its clients)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def subscribers(self) -> list[dict[str, str]]:
        """``CLIENT LIST`` entries of clients holding pub/sub subscriptions."""
        client = self.client()
        try:
            return [entry for entry in client.client_list() if int(entry.get("sub", 0)) or int(entry.get("psub", 0))]
        finally:
            client.close()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def own_backplane(redis: RedisServer, prefix: str, *, history_size: int) -> Iterator[RedisBackplane]:
    """A backplane on a key prefix of its own (one test's ids and history apart from every
    other's), publishing without waiting for delivery reports; closed on the way out."""
    plane = RedisBackplane(redis.url, history_size=history_size, history_ttl=3600, prefix=prefix, sent_timeout=0)
    try:
        yield plane
    finally:
        plane.close()
