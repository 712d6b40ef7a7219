"""The standalone service's command line: `flask-impulse` and `python -m flask_impulse`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.server import ROOT, free_port
from tests.support.streams import SSEStream

FLASK_IMPULSE = [sys.executable, "-m", "flask_impulse"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("REALTIME_SECRET", "IMPULSE_SECRET", "REDIS_URL")}
    return subprocess.run(
        [*FLASK_IMPULSE, *args], cwd=ROOT, env={**environ, **(env or {})}, capture_output=True, text=True, timeout=30
    )


class RunningCLI:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if k not in ("REALTIME_SECRET", "IMPULSE_SECRET")}
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*FLASK_IMPULSE, "--host", "127.0.0.1", "--port", str(self.port), *args],
            cwd=ROOT,
            env={**environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                requests.get(self.url + "/health", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.05)
        raise AssertionError("service did not start:\n" + self.output())

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(15)
        self._log.close()
        return code


@pytest.fixture
def cli_log(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "cli.log"


def test_refuses_to_start_without_a_secret_and_says_how_to_fix_it() -> None:
    result = run_cli("--port", str(free_port()))
    assert result.returncode == 2
    assert "No push secret" in result.stderr
    assert "--secret" in result.stderr and "REALTIME_SECRET" in result.stderr and "--no-auth" in result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_more_than_one_worker_without_a_backplane() -> None:
    result = run_cli("--secret", "s", "--workers", "2", "--port", str(free_port()))
    assert result.returncode == 2
    assert "--workers above 1 needs a shared backplane" in result.stderr


def test_help_lists_the_flags() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--port", "--host", "--secret", "--workers", "--no-auth"):
        assert flag in result.stdout


def test_serves_with_a_secret_and_prints_one_startup_line(cli_log: Path) -> None:
    service = RunningCLI(["--secret", "cli-secret"], {}, cli_log)
    try:
        with SSEStream(service.url + "/", {"channel": "c", "token": "private-token-value"}) as stream:
            pushed = requests.post(
                service.url,
                json={"channel": "c", "payload": 1},
                headers={"Authorization": "Bearer cli-secret"},
                timeout=5,
            )
            assert pushed.json()["sent"] == 1
            assert stream.messages(1) == [{"channel": "c", "payload": 1}]
        assert requests.post(service.url, json={"channel": "c"}, timeout=5).status_code == 401
    finally:
        assert service.stop() == 0
    output = service.output()
    startup = [line for line in output.splitlines() if "listening on" in line]
    assert startup == [startup[0]]
    assert f"http://127.0.0.1:{service.port}/" in startup[0] and "push auth on" in startup[0]
    # Access logs show the stream request, never the token's value.
    assert "GET /?channel=c&token=[redacted]" in output
    assert "private-token-value" not in output


def test_secret_from_environment_and_explicit_no_auth(cli_log: Path) -> None:
    service = RunningCLI([], {"REALTIME_SECRET": "env-secret"}, cli_log)
    try:
        assert requests.post(
            service.url, json={"channel": "c"}, headers={"Authorization": "Bearer env-secret"}, timeout=5
        ).ok
    finally:
        service.stop()

    open_service = RunningCLI(["--no-auth"], {}, cli_log.with_name("open.log"))
    try:
        assert requests.post(open_service.url, json={"channel": "c", "payload": 1}, timeout=5).json()["sent"] == 0
    finally:
        open_service.stop()
    assert "push auth OFF" in open_service.output()
