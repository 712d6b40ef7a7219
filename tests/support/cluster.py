"""Several flask-impulse instances sharing one redis-server, behind a real nginx built from
deploy/nginx.conf: the deployment of docs/scaling.md, for the cluster, deploy and chaos tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.nginx import Nginx
from tests.support.redis import RedisServer
from tests.support.server import LiveServer


@dataclass
class Cluster:
    instances: list[LiveServer]
    nginx: Nginx
    redis: RedisServer


@contextmanager
def running_cluster(
    redis: RedisServer,
    directory: Path,
    workers: tuple[int, ...],
    *,
    secret: str,
    name: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """One instance per entry of ``workers`` (its number of gunicorn workers), started in
    order, then nginx in front of them; every process is stopped on the way out."""
    environment = {"REALTIME_SECRET": secret, "REDIS_URL": redis.url, **(env or {})}
    instances: list[LiveServer] = []
    try:
        for number, count in enumerate(workers, start=1):
            instances.append(LiveServer("wsgi:app", env=environment, workers=count, name=f"{name}{number}").start())
        with Nginx([f"127.0.0.1:{instance.port}" for instance in instances], directory) as nginx:
            yield Cluster(instances, nginx, redis)
    finally:
        for instance in instances:
            instance.stop()
