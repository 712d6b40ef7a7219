"""/health counts the streams of the whole instance, whichever gunicorn worker holds them and
whichever worker answers; a worker that dies stops counting."""

from __future__ import annotations

import os
import signal
import uuid

import pytest
import requests

from tests.conftest import SECRET
from tests.support.fleet import wait_until
from tests.support.processes import streams_on_every_worker, streams_per_worker
from tests.support.server import LiveServer

pytestmark = pytest.mark.live


def health(server: LiveServer) -> int:
    # A new connection each time, so that either worker may answer.
    answer = requests.get(server.health_url, headers={"Connection": "close"}, timeout=10)
    assert answer.status_code == 200
    return int(answer.json()["connections"])


def test_health_on_two_workers_counts_the_streams_of_both_and_forgets_a_dead_one() -> None:
    with LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, workers=2, name="health-2w") as server:
        channel = f"health-{uuid.uuid4().hex[:8]}"
        with streams_on_every_worker(server, server.url + "/", channel, batch=20) as groups:
            opened = sum(len(group.socks) for group in groups)
            held = streams_per_worker(server)
            assert sum(held.values()) == opened and all(held.values())  # each worker holds some
            assert [health(server) for _ in range(10)] == [opened] * 10

            # A worker killed outright: its streams are gone, and so is its count.
            victim = min(held)
            os.kill(victim, signal.SIGKILL)
            survivor = opened - held[victim]
            wait_until(lambda: health(server) == survivor, 20, f"/health to count the {survivor} surviving streams")
            assert [health(server) for _ in range(10)] == [survivor] * 10
