"""examples/vue: built with esbuild against the packed npm package, served beside flask-impulse,
and in headless Chromium a push appears on the page, the state shows ``connected``, and
unmounting the component that uses ``useRealtime`` closes its stream on the server."""

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

EXAMPLE = ROOT / "examples" / "vue"
SECRET = "vue-example-secret-of-32-characters!!"


class VueExample(LiveServer):
    def command(self) -> list[str]:
        return [sys.executable, str(EXAMPLE / "app.py"), "--port", str(self.port)]

    def connections(self) -> int:
        """The streams the service holds open, across its workers."""
        response = requests.get(self.url + "/realtime/health", timeout=10)
        assert response.status_code == 200, response.text
        return int(response.json()["connections"])

    def push(self, author: str, text: str) -> requests.Response:
        return requests.post(
            self.url + "/realtime/",
            json={"channel": "feed:post", "payload": {"author": author, "text": text}},
            headers={"Authorization": f"Bearer {SECRET}"},
            timeout=10,
        )


@pytest.fixture(scope="module")
def example() -> Iterator[VueExample]:
    assert "examples/vue/run" in (EXAMPLE / "README.md").read_text()
    assert '"$here/build"' in (EXAMPLE / "run").read_text()  # the README's command builds first
    built = subprocess.run([str(EXAMPLE / "build")], capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    with VueExample(env={"REALTIME_SECRET": SECRET}, health_path="/realtime/health", name="vue-example") as live:
        yield live


def test_a_push_appears_on_the_page_and_the_state_shows_connected(
    example: VueExample, open_page: Callable[..., Page]
) -> None:
    page = open_page(example.url + "/", name="vue-example")
    page.wait_for_text("#state", "connected")
    author = f"ada-{uuid.uuid4().hex[:6]}"
    response = example.push(author, "pushed")
    assert response.status_code == 200 and response.json()["sent"] == 1, response.text
    page.wait_for_text("#feed li", f"{author} pushed")
    assert page.console_errors() == []


def test_unmounting_the_feed_closes_its_stream_and_mounting_it_again_reopens_one(
    example: VueExample, open_page: Callable[..., Page]
) -> None:
    page = open_page(example.url + "/", name="vue-example-toggle")
    page.wait_for_text("#state", "connected")
    page.wait_until(lambda: example.connections() == 1, "the feed's one stream on the server")
    page.find("#toggle").click()  # unmounts the component that called useRealtime
    page.wait_for_text(".paused", "Paused: the feed is unmounted and its stream is closed.")
    page.wait_until(lambda: example.connections() == 0, "the server to see the feed's stream closed")
    assert example.push("nobody", "listening").json()["sent"] == 0
    page.find("#toggle").click()
    page.wait_for_text("#state", "connected")
    page.wait_until(lambda: example.connections() == 1, "one stream again, not two")
    response = example.push("grace", "again")
    assert response.status_code == 200 and response.json()["sent"] == 1, response.text
    page.wait_for_text("#feed li", "grace again")
    assert page.console_errors() == []


def test_a_payload_that_is_not_a_post_is_refused(example: VueExample) -> None:
    response = requests.post(
        example.url + "/realtime/",
        json={"channel": "feed:post", "payload": {"author": "a", "text": 3}},
        headers={"Authorization": f"Bearer {SECRET}"},
        timeout=10,
    )
    assert response.status_code == 400 and "error" in response.json()
