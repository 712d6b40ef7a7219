"""The package as pip installs it: a wheel built from the checkout serves the documented
``gunicorn -c python:flask_impulse.gunicorn_config flask_impulse.wsgi:app`` from a directory
that is not the checkout, so nothing it needs (modules, entry points, package data) lives only
in the repository."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.packaging import install_the_wheel, outside_the_checkout, run
from tests.support.server import ROOT, LiveServer

pytestmark = pytest.mark.live


class InstalledServer(LiveServer):
    """gunicorn run by another interpreter, from another directory, without the checkout on
    its path."""

    def __init__(self, app_spec: str, *, python: Path, cwd: Path, env: dict[str, str], name: str) -> None:
        super().__init__(app_spec, env=env, name=name)
        self.python = python
        self.cwd = cwd

    def command(self) -> list[str]:
        return [str(self.python), *super().command()[1:]]

    def start(self, timeout: float = 20) -> InstalledServer:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            env={**outside_the_checkout(), **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready(timeout)
        return self


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_the_wheel(tmp_path_factory.mktemp("packaging"))


def test_the_wheel_holds_the_package_not_the_checkout(installed: Path) -> None:
    where = run(
        installed,
        "-c",
        "import importlib.util, flask_impulse.server.worker, flask_impulse.static; "
        "print(importlib.util.find_spec('flask_impulse.wsgi').origin)",
        cwd=installed.parent,
    ).strip()
    assert Path(where).is_relative_to(installed.parents[1])
    assert not Path(where).is_relative_to(ROOT)


def test_gunicorn_serves_the_packaged_wsgi_module_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    env = {"REALTIME_SECRET": secrets.token_urlsafe(32)}
    server = InstalledServer("flask_impulse.wsgi:app", python=installed, cwd=tmp_path, env=env, name="packaged")
    with server:
        answer = requests.get(server.url + "/health", timeout=5)
        assert answer.status_code == 200
        assert answer.json()["status"] == "ok"
        client = requests.get(server.url + "/client.js", timeout=5)  # package data shipped
        assert client.status_code == 200
        assert "ImpulseGeventWorker" in server.log()
