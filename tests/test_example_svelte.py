"""examples/svelte: compiled and bundled with esbuild against the packed npm package, served
beside flask-impulse, and in headless Chromium a push appears on the page and the state shows
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

EXAMPLE = ROOT / "examples" / "svelte"
SECRET = "svelte-example-secret-of-32-characters"


class SvelteExample(LiveServer):
    def command(self) -> list[str]:
        return [sys.executable, str(EXAMPLE / "app.py"), "--port", str(self.port)]


@pytest.fixture(scope="module")
def example() -> Iterator[SvelteExample]:
    assert "examples/svelte/run" in (EXAMPLE / "README.md").read_text()
    assert '"$here/build"' in (EXAMPLE / "run").read_text()  # the README's command builds first
    built = subprocess.run([str(EXAMPLE / "build")], capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    with SvelteExample(env={"REALTIME_SECRET": SECRET}, health_path="/realtime/health", name="svelte-example") as live:
        yield live


def push(example: SvelteExample, payload: dict[str, object]) -> requests.Response:
    return requests.post(
        example.url + "/realtime/",
        json={"channel": "order:placed", "payload": payload},
        headers={"Authorization": f"Bearer {SECRET}"},
        timeout=10,
    )


def test_a_push_appears_on_the_page_and_the_state_shows_connected(
    example: SvelteExample, open_page: Callable[..., Page]
) -> None:
    page = open_page(example.url + "/", name="svelte-example")
    page.wait_for_text("#state", "connected")
    customers = [f"ada-{uuid.uuid4().hex[:6]}", f"grace-{uuid.uuid4().hex[:6]}"]
    for customer, total in zip(customers, (12.5, 40), strict=True):
        response = push(example, {"customer": customer, "total": total})
        assert response.status_code == 200 and response.json()["sent"] == 1, response.text
    page.wait_for_text("#orders li", f"{customers[1]} €40.00")
    shown = [item.text for item in page.find_all("#orders li")]
    assert shown == [f"{customers[1]} €40.00", f"{customers[0]} €12.50"]  # the store's latest, newest first
    assert page.console_errors() == []


def test_a_payload_that_is_not_an_order_is_refused(example: SvelteExample) -> None:
    response = push(example, {"customer": "a", "total": "forty"})
    assert response.status_code == 400 and "error" in response.json()
