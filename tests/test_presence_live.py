"""Presence on a live gunicorn server: the counts over HTTP through ServerClient, a member
leaving with its last stream, and join/leave events on a ?presence=1 stream only."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flask_impulse import PresenceEvent, RealtimeClient, ServerClient
from tests.conftest import SECRET, Service, serve
from tests.support.streams import SSEStream

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with serve("wsgi:app", "presence", REALTIME_SECRET=SECRET, IMPULSE_PRESENCE_CHANNELS="room:*") as service:
        yield service


@pytest.fixture
def client(service: Service) -> Iterator[ServerClient]:
    with ServerClient(service.base, token=SECRET, timeout=5) as client:
        yield client


def wait_for(condition: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll ``condition`` until it holds or the deadline passes; its last value either way."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def members(client: ServerClient, channel: str) -> list[tuple[str, int]]:
    return [(m["id"], m["connections"]) for m in client.presence(channel)["members"]]


def test_three_streams_of_two_members_and_each_leaves_with_its_last(service: Service, client: ServerClient) -> None:
    alice1 = SSEStream(service.base, {"channel": "room:count", "clientId": "alice"})
    alice2 = SSEStream(service.base, {"channel": "room:count", "clientId": "alice"})
    with SSEStream(service.base, {"channel": "room:count", "clientId": "bob"}):
        answer = client.presence("room:count")
        assert answer["connections"] == 3
        assert members(client, "room:count") == [("alice", 2), ("bob", 1)]
        alice1.close()
        assert wait_for(lambda: members(client, "room:count") == [("alice", 1), ("bob", 1)])
        alice2.close()
        assert wait_for(lambda: members(client, "room:count") == [("bob", 1)])
    assert wait_for(lambda: client.presence("room:count")["connections"] == 0)


def test_join_and_leave_arrive_in_order_on_a_presence_stream_only(service: Service, client: ServerClient) -> None:
    channel = "room:events"
    with (
        SSEStream(service.base, {"channel": channel, "presence": "1"}) as watcher,
        SSEStream(service.base, {"channel": channel, "clientId": "bob"}) as plain,
    ):
        alice = SSEStream(service.base, {"channel": channel, "clientId": "alice"})
        alice.close()
        assert wait_for(lambda: members(client, channel) == [("bob", 1)])
        assert service.push({"channel": channel, "payload": "after"}).json()["sent"] == 2
        events = [watcher.next_event(10) for _ in range(4)]
        assert [(e.event, json.loads(e.data)) for e in events[:3]] == [
            ("presence", {"channel": channel, "member": "bob", "action": "join"}),
            ("presence", {"channel": channel, "member": "alice", "action": "join"}),
            ("presence", {"channel": channel, "member": "alice", "action": "leave"}),
        ]
        assert events[3].event == "message" and json.loads(events[3].data)["payload"] == "after"
        # The plain stream's first event is the push: no presence event came before it.
        first = plain.next_event(10)
        assert first.event == "message" and json.loads(first.data)["payload"] == "after"


def test_realtime_client_on_presence_gets_join_and_leave_and_messages_stay_with_subscribe(service: Service) -> None:
    channel = "room:python-client"
    messages: list[Any] = []
    presence: list[PresenceEvent] = []
    with RealtimeClient(service.base, retry_delay=0.05) as realtime:
        realtime.subscribe(channel, messages.append)
        assert realtime.wait_until_connected(10)
        # Added to a live stream: the group switches to one that asks for ?presence=1, and is
        # not connected until that one is open.
        realtime.on_presence(channel, presence.append)
        assert realtime.wait_until_connected(10)
        alice = SSEStream(service.base, {"channel": channel, "clientId": "alice"})
        assert wait_for(lambda: len(presence) == 1)
        alice.close()
        assert wait_for(lambda: len(presence) == 2)
        assert service.push({"channel": channel, "payload": "hello"}).json()["sent"] >= 1
        assert wait_for(lambda: len(messages) == 1)
    assert presence == [PresenceEvent(channel, "alice", "join"), PresenceEvent(channel, "alice", "leave")]
    assert [(event.channel, event.payload) for event in messages] == [(channel, "hello")]
