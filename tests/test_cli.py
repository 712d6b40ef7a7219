"""The standalone service's command line: `flask-impulse` and `python -m flask_impulse`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flask_impulse.server.cli import build_parser, service_config
from flask_impulse.server.service import create_app
from tests.support import secrets
from tests.support.server import ROOT, LiveServer, free_port
from tests.support.streams import SSEStream

pytestmark = pytest.mark.live

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


def test_plain_gunicorn_without_a_secret_names_the_settings_that_apply_there() -> None:
    """No CLI, so no --secret or --no-auth to pass: the hint names the environment settings,
    and the redactor leaves ``IMPULSE_PUSH_WITHOUT_SECRET=true`` readable."""
    environ = {k: v for k, v in os.environ.items() if k not in ("REALTIME_SECRET", "IMPULSE_SECRET", "REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "python:flask_impulse.gunicorn_config", "-b", "127.0.0.1:0",
         "wsgi:app"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    hint = next(line for line in result.stderr.splitlines() if "No push secret" in line)
    assert "REALTIME_SECRET" in hint and "IMPULSE_SECRET" in hint
    assert "IMPULSE_PUSH_WITHOUT_SECRET=true" in hint
    assert "--secret" not in result.stderr and "--no-auth" not in result.stderr
    assert "[redacted]" not in result.stderr


def test_refuses_more_than_one_worker_without_a_backplane() -> None:
    result = run_cli("--secret", "s", "--workers", "2", "--port", str(free_port()))
    assert result.returncode == 2
    assert "--workers above 1 needs a shared backplane" in result.stderr


def test_help_lists_the_flags() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--port", "--host", "--secret", "--workers", "--no-auth"):
        assert flag in result.stdout


@pytest.mark.parametrize("access_log", [False, True], ids=["default", "access-log"])
def test_serves_with_a_secret_and_prints_one_startup_line(cli_log: Path, access_log: bool) -> None:
    service = RunningCLI(["--secret", "cli-secret", *(["--access-log"] if access_log else [])], {}, cli_log)
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
    # A refused request is logged, as the client's mistake: one line, no traceback.
    refused = [line for line in output.splitlines() if "Refused POST '/' from ip=127.0.0.1: 401" in line]
    assert len(refused) == 1, output
    assert "Traceback" not in output
    # The access log, when asked for, shows the stream request, never the token's value; by
    # default no line is written for a request served.
    assert ("GET /?channel=c&token=[redacted]" in output) is access_log
    assert ('"POST / HTTP/1.1" 200' in output) is access_log
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


# -- secrets checked at start ------------------------------------------------------------------
GOOD_SECRET = secrets.ROTATING_PUSH_SECRETS[0]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--secret", " "], {}),
        (["--secret", "\t"], {}),
        (["--secret", GOOD_SECRET, "--secret", "  "], {}),
        ([], {"REALTIME_SECRET": "   "}),
        ([], {"IMPULSE_SECRET": " "}),
        (["--secret", GOOD_SECRET], {"REALTIME_JWT_SECRET": " "}),
    ],
    ids=["space", "tab", "one of two", "REALTIME_SECRET", "IMPULSE_SECRET", "JWT secret"],
)
def test_blank_secret_refuses_to_start_and_says_why(args: list[str], env: dict[str, str]) -> None:
    result = run_cli(*args, "--port", str(free_port()), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "empty or whitespace-only secret" in result.stderr
    assert "Traceback" not in result.stderr


def test_short_push_secret_starts_with_a_warning_naming_the_minimum(cli_log: Path) -> None:
    service = RunningCLI(["--secret", "short"], {}, cli_log)
    try:
        pushed = requests.post(
            service.url, json={"channel": "c", "payload": 1}, headers={"Authorization": "Bearer short"}, timeout=5
        )
        assert pushed.status_code == 200
    finally:
        assert service.stop() == 0
    assert "IMPULSE_SECRET holds a secret shorter than 32 characters, the documented minimum" in service.output()


def test_a_secret_of_32_characters_starts_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_impulse"):
        create_app({"IMPULSE_SECRET": "x" * 32})
        assert not caplog.records
        create_app({"IMPULSE_SECRET": ["x" * 32, "y" * 31]})
        assert [record.levelname for record in caplog.records] == ["WARNING"]


def test_short_jwt_secret_refuses_to_start_naming_the_minimum() -> None:
    result = run_cli("--secret", GOOD_SECRET, "--port", str(free_port()), env={"REALTIME_JWT_SECRET": "short"})
    assert result.returncode == 2
    assert "at least 32 bytes" in result.stderr


def test_cli_secret_and_rotation_list_combine_with_the_current_secret_first(
    cli_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    current, rotated = secrets.ROTATING_PUSH_SECRETS
    monkeypatch.setenv("REALTIME_SECRETS", f"{rotated},older-{rotated}")
    monkeypatch.setenv("REALTIME_SECRET", "replaced-by-the-flag")
    config = service_config(build_parser().parse_args(["--secret", current]))
    assert config["IMPULSE_SECRET"] == [current, rotated, f"older-{rotated}"]

    service = RunningCLI(["--secret", current], {"REALTIME_SECRETS": rotated}, cli_log)
    try:
        for secret, status in ((current, 200), (rotated, 200), (secrets.UNKNOWN_PUSH_SECRET, 403)):
            pushed = requests.post(
                service.url,
                json={"channel": "c", "payload": 1},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=5,
            )
            assert pushed.status_code == status, secret
    finally:
        service.stop()


def test_plain_gunicorn_checks_secrets_through_the_settings() -> None:
    """No CLI: the app refuses a blank secret when the worker loads it, and warns about a short one."""
    refused = LiveServer("wsgi:app", env={"REALTIME_SECRET": " "}, name="blank-secret")
    try:
        with pytest.raises(RuntimeError, match="server exited early"):
            refused.start()
    finally:
        refused.stop()
    assert "empty or whitespace-only secret" in refused.log()

    with LiveServer("wsgi:app", env={"REALTIME_SECRET": "short"}, name="short-secret") as server:
        pushed = requests.post(
            server.url, json={"channel": "c", "payload": 1}, headers={"Authorization": "Bearer short"}, timeout=5
        )
        assert pushed.status_code == 200
        assert "shorter than 32 characters" in server.log()
