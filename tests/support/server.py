"""Real gunicorn + gevent servers on free loopback ports, started and stopped by fixtures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "tests" / ".logs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """gunicorn serving ``app_spec`` (``module:app``) with gevent workers.

    Logs go to ``tests/.logs/<name>-<port>.log``: the security tests grep every log for
    secrets, so nothing is thrown away.
    """

    def __init__(
        self,
        app_spec: str = "wsgi:app",
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        health_path: str = "/health",
        extra_args: list[str] | None = None,
        name: str = "server",
        port: int | None = None,
        access_log: bool = False,
    ) -> None:
        self.app_spec = app_spec
        # Off, as the service runs by default: the standalone service's plain requests are
        # then served by the worker's lean HTTP/1.1 loop, which an access log turns off.
        self.access_log = access_log
        self.env = env or {}
        self.workers = workers
        self.health_path = health_path
        self.extra_args = extra_args or []
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        LOG_DIR.mkdir(exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:flask_impulse.gunicorn_config",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            *(["--access-logfile", "-"] if self.access_log else []),
            "--graceful-timeout",
            "5",
            *self.extra_args,
            self.app_spec,
        ]

    def start(self, timeout: float = 20) -> LiveServer:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited early ({self.process.returncode}); see {self.log_path}:\n{self.log()}"
                )
            try:
                if requests.get(self.health_url, timeout=1).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s; see {self.log_path}:\n{self.log()}")

    @property
    def health_url(self) -> str:
        return self.url + self.health_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 10) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        self._log.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
