"""Replicas behind a real nginx configured like deploy/nginx.conf, sharing one redis-server:
three service instances (the first with two workers), as deploy/docker-compose.yml runs them."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support.cluster import Cluster, running_cluster
from tests.support.processes import kill_hard, streams_per_worker
from tests.support.redis import RedisServer
from tests.support.resuming import ResumingStreams
from tests.support.server import LiveServer

SECRET = "cluster-secret"


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A generous wait for delivery counts: the tests assert exact "sent" on a noisy machine.
    with running_cluster(
        redis_server,
        tmp_path_factory.mktemp("nginx"),
        (2, 1, 1),
        secret=SECRET,
        name="replica",
        env={"IMPULSE_REDIS_SENT_TIMEOUT": "5"},
    ) as cluster:
        yield cluster


@dataclass
class Pusher:
    """Pushes payloads 0..count-1 in order from a thread, each request to an instance ``pick``
    chooses, in batches of 1 to ``max_batch`` pushes (a batch of one is a plain push object)."""

    pick: Callable[[], LiveServer]
    count: int
    channel: str
    max_batch: int = 1
    before_request: Callable[[int], None] = lambda number: None
    sent: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        sessions: dict[int, requests.Session] = {}
        try:
            number = 0
            while number < self.count:
                self.before_request(number)
                size = min(random.randint(1, self.max_batch), self.count - number)
                pushes = [{"channel": self.channel, "payload": n} for n in range(number, number + size)]
                instance = self.pick()
                session = sessions.setdefault(instance.port, requests.Session())
                answer = session.post(
                    instance.url,
                    json=pushes if size > 1 else pushes[0],
                    headers={"Authorization": f"Bearer {SECRET}"},
                    timeout=30,
                )
                answer.raise_for_status()
                body = answer.json()
                self.sent.extend([result["sent"] for result in body["results"]] if size > 1 else [body["sent"]])
                number += size
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)
        finally:
            for session in sessions.values():
                session.close()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread


def test_300_subscribers_through_nginx_receive_1000_pushes_to_random_instances_in_order(cluster: Cluster) -> None:
    with ResumingStreams(cluster.nginx.url + "/", 300, {"channel": "cluster"}) as streams:
        streams.connect_all()
        for instance in cluster.instances:  # nginx spread the streams over every replica
            assert sum(streams_per_worker(instance).values()) > 0
        # Pushes to random replicas, one by one or in batches (one request, many pushes).
        pusher = Pusher(lambda: random.choice(cluster.instances), 1000, "cluster", max_batch=20)
        thread = pusher.start()
        streams.run_until(lambda: bool(pusher.errors) or all(len(p) >= 1000 for p in streams.payloads()), 150)
        thread.join(30)
        assert not pusher.errors, pusher.errors
        expected = list(range(1000))
        for payloads in streams.payloads():
            assert payloads == expected  # all, in order, none twice
        assert all(stream.connects == 1 for stream in streams.streams)
        assert pusher.sent == [300] * 1000  # every worker reported its deliveries


def test_clients_of_a_killed_replica_resume_through_nginx_and_lose_nothing(cluster: Cluster, tmp_path: Path) -> None:
    doomed = cluster.instances[1]
    survivors = [cluster.instances[0], cluster.instances[2]]

    killed = threading.Event()

    def kill_midway(number: int) -> None:
        if number >= 200 and not killed.is_set():
            kill_hard(doomed)
            killed.set()

    with ResumingStreams(cluster.nginx.url + "/", 150, {"channel": "failover"}) as streams:
        streams.connect_all()
        on_doomed = sum(streams_per_worker(doomed).values())
        assert on_doomed > 0
        pusher = Pusher(lambda: random.choice(survivors), 600, "failover", max_batch=10, before_request=kill_midway)
        thread = pusher.start()
        try:
            streams.run_until(lambda: bool(pusher.errors) or all(len(p) >= 600 for p in streams.payloads()), 120)
            thread.join(30)
            assert not pusher.errors, pusher.errors
            expected = list(range(600))
            for payloads in streams.payloads():
                assert payloads == expected  # nothing lost over the whole run, nothing twice
            reconnected = [stream for stream in streams.streams if stream.connects > 1]
            assert len(reconnected) >= on_doomed  # the killed replica's clients came back elsewhere
        finally:
            thread.join(30)
            doomed.stop()
            doomed.start()  # the module's cluster is whole again
