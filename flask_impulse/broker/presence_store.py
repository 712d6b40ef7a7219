"""Presence counted across the cluster, in Redis keys that expire.

Each worker process writes, for every presence channel it holds streams on, its own counts
into the channel's hash ``PREFIX:presence:CHANNEL``: the field ``PROCESS\\x1f`` holds its
streams on the channel, ``PROCESS\\x1fMEMBER`` those of one member (member ids cannot hold
control characters: the stream's query check refuses them). It writes them when a stream
opens or ends, and again every ``refresh`` seconds from a heartbeat greenlet, which also
renews ``PREFIX:presence-alive:PROCESS`` for ``3 * refresh``. A reader sums the fields of the
processes whose alive key exists: a killed process's members are gone from the answers within
``3 * refresh`` seconds, and its fields are deleted by the next reader that sees them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import gevent

from ..errors import Refusal
from .redis import _import_redis

log = logging.getLogger("flask_impulse.presence")

#: Missed refreshes after which a process counts as gone.
LIVES = 3
_SEPARATOR = "\x1f"
#: One channel's streams in a process, and its members' streams among them.
Counts = tuple[int, Mapping[str, int]]


class RedisPresence:
    """One process's presence counts in Redis, and the cluster's sums read back."""

    def __init__(self, client: Callable[[], Any], prefix: str, refresh: float) -> None:
        self._client = client  # called on first use: building an app in a master imports no redis
        self._prefix = prefix
        self.refresh = refresh
        self._ttl_ms = int(refresh * LIVES * 1000)
        self._process = uuid.uuid4().hex
        self._heartbeat: gevent.Greenlet | None = None
        self._local: Callable[[], Mapping[str, Counts]] = dict

    def follow(self, local: Callable[[], Mapping[str, Counts]]) -> None:
        """Take the heartbeat's counts from ``local``: every local channel's counts."""
        self._local = local

    @property
    def leave_within(self) -> float:
        """Seconds after which a killed process's members are no longer counted."""
        return self.refresh * LIVES

    def _hash(self, channel: str) -> str:
        return f"{self._prefix}:presence:{channel}"

    def _alive(self, process: str) -> str:
        return f"{self._prefix}:presence-alive:{process}"

    def write(self, channel: str, connections: int, members: Mapping[str, int], gone: str | None = None) -> None:
        """Store this process's counts on ``channel``; ``gone`` is a member whose last local
        stream just ended. A Redis failure is logged: the next heartbeat writes them again."""
        if self._heartbeat is None:
            self._heartbeat = gevent.spawn(self._beat)
        try:
            self._write_all({channel: (connections, members)}, gone={channel: gone} if gone else {})
        except _import_redis().RedisError as exc:  # the stream opens or ends whatever Redis does
            log.warning("presence: could not write the counts of %s to Redis (%s)", channel, exc)

    def _write_all(self, counts: Mapping[str, Counts], gone: Mapping[str, str]) -> None:
        pipe = self._client().pipeline(transaction=False)
        pipe.set(self._alive(self._process), 1, px=self._ttl_ms)
        for channel, (connections, members) in counts.items():
            key = self._hash(channel)
            if channel in gone:
                pipe.hdel(key, f"{self._process}{_SEPARATOR}{gone[channel]}")
            if connections:
                fields = {f"{self._process}{_SEPARATOR}{m}": n for m, n in members.items()}
                fields[f"{self._process}{_SEPARATOR}"] = connections
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, self._ttl_ms)
            else:
                pipe.hdel(key, f"{self._process}{_SEPARATOR}")
        pipe.execute()

    def _beat(self) -> None:
        while True:
            gevent.sleep(self.refresh)
            try:
                self._write_all(self._local(), {})
            except _import_redis().RedisError as exc:
                log.warning("presence: heartbeat could not reach Redis (%s)", exc)
            except Exception:  # a bug of ours must not end the heartbeat, and the counts with it
                log.exception("presence: heartbeat failed")

    def read(self, channel: str) -> tuple[int, dict[str, int]]:
        """The cluster's streams on ``channel``, and its members' counts, from live processes;
        a 503 ``Refusal`` when Redis does not answer."""
        try:
            return self._read(channel)
        except _import_redis().RedisError as exc:
            raise Refusal("Presence unavailable", f"Redis did not answer ({exc})", status=503) from exc

    def _read(self, channel: str) -> tuple[int, dict[str, int]]:
        client = self._client()
        key = self._hash(channel)
        fields: dict[bytes, bytes] = client.hgetall(key)
        parsed = [(f.decode().partition(_SEPARATOR), int(v)) for f, v in fields.items()]
        processes = sorted({process for (process, _, _), _ in parsed})
        alive = dict(zip(processes, client.mget([self._alive(p) for p in processes]), strict=True)) if processes else {}
        connections, members = 0, dict[str, int]()
        dead = []
        for (process, _, member), count in parsed:
            if alive.get(process) is None:
                dead.append(f"{process}{_SEPARATOR}{member}")
            elif member:
                members[member] = members.get(member, 0) + count
            else:
                connections += count
        if dead:
            client.hdel(key, *dead)
        return connections, members

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
            self._heartbeat = None
