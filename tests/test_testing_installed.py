"""The pytest plugin as a user's project meets it: after a plain (not editable) install of the
wheel into a fresh venv, a project's own test module uses ``impulse_pushes`` and
``live_impulse`` without importing or configuring anything, from outside the checkout."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.packaging import STEP_TIMEOUT, install_the_wheel, outside_the_checkout, run
from tests.support.server import ROOT

pytestmark = pytest.mark.live

APP = """
from flask import Flask
from flask_impulse import Impulse

app = Flask(__name__)
impulse = Impulse(app)


@app.post("/orders/<int:number>")
def order(number):
    impulse.push("orders", {"number": number}, topic="shop")
    return {"ok": True}
"""

TESTS = """
from app import app


def test_an_order_is_pushed(impulse_pushes):
    app.test_client().post("/orders/7")
    impulse_pushes.assert_pushed("orders", {"number": 7}, topic="shop")


def test_a_push_reaches_a_live_subscriber(live_impulse):
    with live_impulse.subscribe("orders", topic="shop") as orders:
        live_impulse.client.push("orders", {"number": 8}, topic="shop")
        assert orders.payloads(1) == [{"number": 8}]


def test_a_wrong_expectation_fails(impulse_pushes):
    app.test_client().post("/orders/9")
    impulse_pushes.assert_pushed("orders", {"number": 10})
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_the_wheel(tmp_path_factory.mktemp("plugin"))


def test_a_users_project_uses_the_fixtures_after_pip_install(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text(textwrap.dedent(APP))
    (project / "test_app.py").write_text(textwrap.dedent(TESTS))
    result = subprocess.run(
        [str(installed), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "test_app.py"],
        cwd=project,
        env=outside_the_checkout(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert "1 failed, 2 passed" in output, output
    assert "expected a push on 'orders' payload={'number': 10}" in output
    # The plugin came from the wheel in the venv, not from the checkout.
    where = run(installed, "-c", "import flask_impulse.testing as t; print(t.__file__)", cwd=project).strip()
    assert Path(where).is_relative_to(installed.parents[1]) and not Path(where).is_relative_to(ROOT)
