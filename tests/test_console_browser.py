"""BASE/console in headless Chromium, under its own strict CSP: refused without the token,
live with it; its connection count follows streams the test opens; a message pushed from
its form reaches a subscriber the test holds, and its own subscribe form. The test saves
the screenshot the README shows (docs/images/console.png)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
import requests

from flask_impulse.console import COOKIE
from tests.support.browser import Page
from tests.support.secrets import CONSOLE_TOKEN
from tests.support.server import ROOT, LiveServer
from tests.support.streams import SSEStream

pytestmark = [pytest.mark.live, pytest.mark.browser]

SECRET = "console-browser-secret"
SCREENSHOT = ROOT / "docs" / "images" / "console.png"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    env = {"REALTIME_SECRET": SECRET, "IMPULSE_CONSOLE_TOKEN": CONSOLE_TOKEN, "IMPULSE_PRESENCE_CHANNELS": "room:*"}
    with LiveServer(env=env, name="console-browser") as live:
        yield live


def push(server: LiveServer, channel: str, payload: object) -> None:
    answer = requests.post(
        server.url + "/", json={"channel": channel, "payload": payload},
        headers={"Authorization": f"Bearer {SECRET}"}, timeout=5,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text


def fill(page: Page, css: str, text: str) -> None:
    field = page.find(css)
    field.clear()
    field.send_keys(text)


def test_the_console_page_is_refused_without_the_token(server: LiveServer, open_page: Callable[..., Page]) -> None:
    page = open_page(server.url + "/console", name="console-refused")
    body = page.wait_until(lambda: page.find("body").text, "the refusal")
    assert json.loads(body)["error"] == "Console token required"
    assert not page.find_all("#connections")


def test_the_console_follows_streams_and_pushes_from_its_form(
    server: LiveServer, open_page: Callable[..., Page]
) -> None:
    # The browser gets the session cookie that opening BASE/console?token= once sets. It is
    # taken here rather than by the browser because chromedriver logs every URL it is sent,
    # and no log may hold the token.
    opened = requests.get(f"{server.url}/console", params={"token": CONSOLE_TOKEN}, timeout=5, allow_redirects=False)
    assert opened.status_code == 303 and opened.headers["Location"] == "/console"
    cookie = opened.cookies[COOKIE]
    page = open_page(server.url + "/console", name="console")  # refused: no cookie yet
    page.driver.set_window_size(1280, 1000)
    session = {"name": COOKIE, "value": cookie, "path": "/console", "httpOnly": True, "sameSite": "Strict"}
    page.driver.add_cookie(session)
    page.console_errors()  # read off: the refusal's 401, and the favicon its JSON page has not
    page.open(server.url + "/console")
    assert page.driver.execute_script("return document.cookie") == ""  # HttpOnly: no script reads it
    page.wait_until(lambda: page.find("#status").text.startswith("live"), "the first snapshot")
    page.wait_for_text("#connections", "0")

    with ExitStack() as streams:
        for member in ("alice", "bob", "alice"):
            streams.enter_context(SSEStream(server.url + "/", {"channel": "room:lobby", "clientId": member}))
        page.wait_for_text("#connections", "3")
        page.wait_for_text("#channels td", "room:lobby")
        subscriber = streams.enter_context(SSEStream(server.url + "/", {"channel": "room:demo"}))
        page.wait_for_text("#connections", "4")

        # The page's own subscription: an EventSource on BASE?channel=room:demo&presence=1.
        fill(page, "#subscribe-channel", "room:demo")
        page.find("#subscribe-presence").click()
        page.find("#subscribe-button").click()
        page.wait_for_text("#subscribe-state", "Subscribed to room:demo.")
        page.wait_for_text("#connections", "5")
        # A member joins the page's presence channel: the page lists the named event.
        streams.enter_context(SSEStream(server.url + "/", {"channel": "room:demo", "clientId": "carol"}))
        join = {"channel": "room:demo", "member": "carol", "action": "join"}
        page.wait_for_text("#received li.presence", "presence " + json.dumps(join, separators=(",", ":")))
        page.wait_for_text("#connections", "6")

        fill(page, "#push-channel", "room:demo")
        fill(page, "#push-payload", '{"text": "hello from the console"}')
        page.find("#push-button").click()
        answer = page.wait_until(lambda: page.find("#push-answer").text, "the push's answer")
        status, _, body = answer.partition(" ")
        assert status == "200" and json.loads(body)["sent"] == 3
        [message] = subscriber.messages(1)
        assert message == {"channel": "room:demo", "payload": {"text": "hello from the console"}}
        expected = json.dumps(message, separators=(",", ":"))
        page.wait_for_text("#received li", expected)

        # Bad JSON from the form: the push endpoint's own 400, shown on the page.
        fill(page, "#push-payload", "{not json")
        page.find("#push-button").click()
        page.wait_until(lambda: page.find("#push-answer").text.startswith("400 "), "the 400 answer")
        fill(page, "#push-payload", '{"text": "hello from the console"}')
        page.find("#push-button").click()
        page.wait_until(lambda: page.find("#push-answer").text.startswith("200 "), "the 200 answer")
        # A few seconds of traffic, so that the chart has something to draw.
        deadline = time.monotonic() + 6
        burst = 1
        while time.monotonic() < deadline:
            for n in range(burst):
                push(server, "room:lobby", {"n": n})
            burst = burst % 6 + 1
            time.sleep(0.25)
        page.wait_until(lambda: float(page.find("#push-rate").text) > 0, "a push rate above zero")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(SCREENSHOT)

    page.wait_for_text("#connections", "1")  # the page's own stream is left
    # The one error the page logged is the 400 it was sent on purpose; no CSP violation.
    errors = page.console_errors()
    assert all("console/push" in error and "400" in error for error in errors), errors
    assert not any("Content Security Policy" in error for error in errors)
