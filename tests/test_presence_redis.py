"""Presence across two instances sharing one redis-server: the counts of both, read from
either, and a killed instance's members gone within the stated time (3 refreshes)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from flask_impulse import ServerClient
from tests.conftest import SECRET
from tests.support.processes import kill_hard
from tests.support.redis import RedisServer
from tests.support.server import LiveServer
from tests.support.streams import SSEStream

pytestmark = [pytest.mark.live, pytest.mark.redis]

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
        for server, member, count in ((a, "alice", 3), (b, "bob", 2)):
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
        # Within the stated bound; the margin is for a loaded machine, not part of the claim.
        assert wait_for(lambda: presence(a, channel) == alone, LEAVE_WITHIN + 5), presence(a, channel)
