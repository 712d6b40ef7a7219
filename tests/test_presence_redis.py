"""Presence across two instances sharing one redis-server: the counts of both, read from
either, a killed instance's members gone within the stated time (3 refreshes), and the
cluster's join and leave events, once each, on a ?presence=1 stream of the other instance."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import requests

from flask_impulse import ServerClient
from tests.conftest import SECRET
from tests.support.processes import kill_hard
from tests.support.redis import RedisServer
from tests.support.server import LiveServer
from tests.support.streams import SSEStream

pytestmark = [pytest.mark.live, pytest.mark.redis]

AUTH = {"Authorization": f"Bearer {SECRET}"}
REFRESH = 0.5
LEAVE_WITHIN = 3 * REFRESH  # docs/presence.md


@pytest.fixture
def instances(redis_server: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    env = {
        "REALTIME_SECRET": SECRET,
        "IMPULSE_REDIS_URL": redis_server.url,
        "IMPULSE_PRESENCE_CHANNELS": "room:*",
        "IMPULSE_PRESENCE_REFRESH": str(REFRESH),
    }
    with LiveServer(env=env, name="presence-a") as a, LiveServer(env=env, name="presence-b") as b:
        yield a, b


def presence(server: LiveServer, channel: str) -> dict[str, Any]:
    with ServerClient(server.url + "/", token=SECRET, timeout=5) as client:
        return client.presence(channel)


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_five_streams_on_two_instances_and_a_killed_instance_leaves(instances: tuple[LiveServer, LiveServer]) -> None:
    a, b = instances
    channel = "room:cluster"
    with ExitStack() as stack:
        # alice's first stream asks for the events: it sees the cluster's joins and leaves.
        watcher = stack.enter_context(
            SSEStream(a.url + "/", {"channel": channel, "clientId": "alice", "presence": "1"})
        )
        for server, member, count in ((a, "alice", 2), (b, "bob", 2)):
            for _ in range(count):
                stack.enter_context(SSEStream(server.url + "/", {"channel": channel, "clientId": member}))
        both = {
            "channel": channel,
            "connections": 5,
            "memberCount": 2,
            "members": [{"id": "alice", "connections": 3}, {"id": "bob", "connections": 2}],
        }
        assert presence(a, channel) == both
        assert presence(b, channel) == both

        kill_hard(b)
        alone = {"channel": channel, "connections": 3, "memberCount": 1, "members": [{"id": "alice", "connections": 3}]}
        # Within the stated bounds; the margin is for a loaded machine, not part of the claim.
        assert wait_for(lambda: presence(a, channel) == alone, LEAVE_WITHIN + 5), presence(a, channel)
        events = [watcher.next_event(LEAVE_WITHIN + REFRESH + 5) for _ in range(3)]
        assert [(e.event, json.loads(e.data)) for e in events] == [
            ("presence", {"channel": channel, "member": "alice", "action": "join"}),
            ("presence", {"channel": channel, "member": "bob", "action": "join"}),
            ("presence", {"channel": channel, "member": "bob", "action": "leave"}),
        ]
        # Nothing else: the next event is a push made after the leave.
        push = requests.post(a.url + "/", json={"channel": channel, "payload": "end"}, headers=AUTH, timeout=10)
        assert push.status_code == 200
        after = watcher.next_event(10)
        assert after.event == "message" and json.loads(after.data)["payload"] == "end"


def test_a_member_on_both_instances_joins_once_and_leaves_with_its_last_stream(
    instances: tuple[LiveServer, LiveServer],
) -> None:
    a, b = instances
    channel = "room:both"
    with SSEStream(b.url + "/", {"channel": channel, "presence": "1"}) as watcher:
        on_a = SSEStream(a.url + "/", {"channel": channel, "clientId": "dana"})
        on_b = SSEStream(b.url + "/", {"channel": channel, "clientId": "dana"})
        assert wait_for(lambda: presence(a, channel)["members"] == [{"id": "dana", "connections": 2}], 10)
        on_a.close()
        assert wait_for(lambda: presence(b, channel)["members"] == [{"id": "dana", "connections": 1}], 10)
        on_b.close()
        assert wait_for(lambda: presence(a, channel)["members"] == [], 10)
        push = requests.post(a.url + "/", json={"channel": channel, "payload": "end"}, headers=AUTH, timeout=10)
        assert push.status_code == 200
        events = [watcher.next_event(10) for _ in range(3)]
    assert [(e.event, json.loads(e.data)["action"]) for e in events[:2]] == [
        ("presence", "join"),
        ("presence", "leave"),
    ]
    assert events[2].event == "message"
