"""examples/react: built with esbuild against the packed npm package, served beside
flask-impulse, and in headless Chromium a push appears on the page and the state shows
``connected``."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.browser import Page
from tests.support.server import ROOT, LiveServer

pytestmark = [pytest.mark.node, pytest.mark.browser]

EXAMPLE = ROOT / "examples" / "react"
SECRET = "react-example-secret-of-32-characters!"


class ReactExample(LiveServer):
    def command(self) -> list[str]:
        return [sys.executable, str(EXAMPLE / "app.py"), "--port", str(self.port)]


@pytest.fixture(scope="module")
def example() -> Iterator[ReactExample]:
    assert "examples/react/run" in (EXAMPLE / "README.md").read_text()
    assert '"$here/build"' in (EXAMPLE / "run").read_text()  # the README's command builds first
    built = subprocess.run([str(EXAMPLE / "build")], capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    with ReactExample(env={"REALTIME_SECRET": SECRET}, health_path="/realtime/health", name="react-example") as live:
        yield live


def test_a_push_appears_on_the_page_and_the_state_shows_connected(
    example: ReactExample, open_page: Callable[..., Page]
) -> None:
    page = open_page(example.url + "/", name="react-example")
    page.wait_for_text("#state", "connected")
    title = f"hello-{uuid.uuid4().hex[:6]}"
    response = requests.post(
        example.url + "/realtime/",
        json={"channel": "notification:new", "payload": {"type": "success", "title": title, "message": "pushed"}},
        headers={"Authorization": f"Bearer {SECRET}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["sent"] == 1, response.text
    item = page.wait_for_text("#notifications li", f"{title} pushed")
    assert item.get_attribute("class") == "success"
    assert page.console_errors() == []


def test_a_payload_that_is_not_a_notification_is_refused(example: ReactExample) -> None:
    response = requests.post(
        example.url + "/realtime/",
        json={"channel": "notification:new", "payload": {"type": "urgent", "title": "t", "message": "m"}},
        headers={"Authorization": f"Bearer {SECRET}"},
        timeout=10,
    )
    assert response.status_code == 400 and "error" in response.json()
