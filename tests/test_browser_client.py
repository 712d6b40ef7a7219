"""BASE/client.js in headless Chromium: one stream for many channels, reconnects that lose nothing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.support.browser import Page
from tests.support.proxy import TcpProxy
from tests.support.server import LiveServer, free_port

pytestmark = [pytest.mark.live, pytest.mark.browser]

APP = "tests.apps.browser_client:app"
SECRET = "browser-secret"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(APP, health_path="/realtime/health", name="browser-client") as live:
        yield live


def push(server: LiveServer, channel: str, payload: Any) -> int:
    response = requests.post(
        server.url + "/realtime",
        json={"channel": channel, "payload": payload},
        headers={"Authorization": f"Bearer {SECRET}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["sent"])


def connections(server: LiveServer) -> int:
    return int(requests.get(server.health_url, timeout=5).json()["connections"])


def page_value(page: Page, expression: str) -> Any:
    return page.driver.execute_script(f"return {expression}")


def open_subscriber(open_page: Callable[..., Page], url: str, channels: list[str]) -> Page:
    page = open_page(f"{url}/?channels={','.join(channels)}", name="client-js")
    page.wait_until(lambda: page_value(page, "window.client && window.client.getStats().state") == "connected",
                    "the stream to open")  # fmt: skip
    return page


def wait_received(page: Page, count: int) -> list[list[Any]]:
    page.wait_until(lambda: page_value(page, "window.received.length") >= count, f"{count} messages")
    return page_value(page, "window.received")  # type: ignore[no-any-return]


def channel_names(count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:6]
    return [f"{prefix}:ch{number}" for number in range(count)]


def test_client_js_is_served_beside_the_stream_as_a_module(server: LiveServer) -> None:
    script = requests.get(server.url + "/realtime/client.js", timeout=5)
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    # Built from js/src/realtime.js by esbuild, which gathers the exports at the end.
    assert re.search(r"export \{[^}]*\bcreateRealtimeClient\b", script.text), script.text[-300:]
    types = requests.get(server.url + "/realtime/client.d.ts", timeout=5)
    assert types.status_code == 200
    assert "export declare function createRealtimeClient" in types.text
    assert requests.post(server.url + "/realtime/client.js", timeout=5).status_code == 404


def test_eight_channels_share_one_connection_and_all_receive(
    server: LiveServer, open_page: Callable[..., Page]
) -> None:
    channels = channel_names(8)
    page = open_subscriber(open_page, server.url, channels)
    page.wait_until(lambda: connections(server) == 1, "one connection on the server")
    for channel in channels:
        assert push(server, channel, {"on": channel}) == 1
    received = wait_received(page, 8)
    assert sorted(channel for channel, _payload, _id in received) == sorted(channels)
    assert all(payload == {"on": channel} for channel, payload, _id in received)
    stats = page_value(page, "window.client.getStats()")
    assert (stats["connections"], stats["channels"], stats["subscriptions"]) == (1, 8, 8)
    assert connections(server) == 1
    assert page_value(page, "window.errors") == []


def test_subscribing_more_channels_later_switches_streams_without_losing_messages(
    server: LiveServer, open_page: Callable[..., Page]
) -> None:
    first, later = channel_names(2)
    page = open_subscriber(open_page, server.url, [first])
    page.driver.execute_script(
        "window.client.subscribe(arguments[0], (e) => window.received.push([e.channel, e.payload, e.id]))",
        later,
    )
    # Messages on the first channel while the stream is replaced: none lost, none twice.
    for number in range(30):
        push(server, first, number)
    page.wait_until(lambda: page_value(page, "window.client.getStats().channels") == 2, "the second subscription")
    page.wait_until(lambda: push(server, later, "later") == 1 or None, "the new stream to carry the later channel")
    received = wait_received(page, 31)
    assert [payload for channel, payload, _id in received if channel == first] == list(range(30))
    page.wait_until(lambda: connections(server) == 1, "the replaced stream to close")


def test_states_and_messages_across_a_server_restart(open_page: Callable[..., Page]) -> None:
    port = free_port()
    channels = channel_names(8)
    live = LiveServer(APP, health_path="/realtime/health", name="browser-restart", port=port).start()
    try:
        page = open_subscriber(open_page, live.url, channels)
        for channel in channels:
            push(live, channel, "before")
        wait_received(page, 8)
        live.stop()
        page.wait_until(lambda: "disconnected" in page_value(page, "window.states"), "the page to see the restart")
        live = LiveServer(APP, health_path="/realtime/health", name="browser-restart", port=port).start()
        page.wait_until(lambda: page_value(page, "window.states").count("connected") >= 2, "the page to reconnect")
        page.wait_until(lambda: connections(live) == 1, "one connection on the restarted server")
        for channel in channels:
            assert push(live, channel, "after") == 1
        received = wait_received(page, 16)
    finally:
        live.stop()
    states = page_value(page, "window.states")
    assert states[:2] == ["connecting", "connected"]
    assert states.index("disconnected") < len(states) - 1 - states[::-1].index("connected")
    assert sorted((channel, payload) for channel, payload, _id in received) == sorted(
        [(channel, "before") for channel in channels] + [(channel, "after") for channel in channels]
    )


def test_a_network_cut_resumes_from_the_last_id_with_nothing_lost(
    server: LiveServer, open_page: Callable[..., Page]
) -> None:
    channels = channel_names(8)
    with TcpProxy(server.port) as proxy:
        page = open_subscriber(open_page, proxy.url, channels)
        for channel in channels:
            push(server, channel, 0)
        wait_received(page, 8)
        proxy.hold(True)
        proxy.cut()
        page.wait_until(lambda: page_value(page, "window.client.getStats().state") != "connected", "the cut")
        for number in (1, 2):
            for channel in channels:
                push(server, channel, number)  # while the page is away
        proxy.hold(False)
        received = wait_received(page, 24)
        page.wait_until(lambda: page_value(page, "window.client.getStats().state") == "connected", "the reconnect")
    for channel in channels:
        assert [payload for name, payload, _id in received if name == channel] == [0, 1, 2]
    assert len({message_id for _channel, _payload, message_id in received}) == 24
