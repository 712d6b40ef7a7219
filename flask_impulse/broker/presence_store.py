"""Presence counted across the cluster, in Redis keys that expire, with its join and leave events.

Each worker process writes, for every presence channel it holds streams on, its own counts
into the channel's hash ``PREFIX:presence:CHANNEL``: the field ``PROCESS\\x1f`` holds its
streams on the channel, ``PROCESS\\x1fMEMBER`` those of one member (member ids cannot hold
control characters: the stream's query check refuses them). It writes them when a stream
opens or ends (``presence.lua``), and again every ``refresh`` seconds from a heartbeat
greenlet, which also renews ``PREFIX:presence-alive:PROCESS`` for ``3 * refresh``. A reader
sums the fields of the processes whose alive key exists: a killed process's members are gone
from the answers within ``3 * refresh`` seconds.

Join and leave are decided in the same script as the write, against the other live
processes' fields, and published on ``PREFIX:presence-events``: a member's first stream in the
cluster joins, its last leaves, once, in the order Redis ran the scripts. The heartbeat's sweep
(``presence_sweep.lua``) drops a dead process's fields and announces the leave of the members
it alone held. Each process's listener hands the events to its local ``?presence=1`` streams.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import gevent
from gevent.event import Event

from ..errors import Refusal
from .redis import _import_redis

log = logging.getLogger("flask_impulse.presence")

#: Missed refreshes after which a process counts as gone.
LIVES = 3
#: Seconds the first stream waits for the events subscription, so that it sees what follows.
SUBSCRIBE_WAIT = 2.0
_SEPARATOR = "\x1f"
#: One channel's streams in a process, and its members' streams among them.
Counts = tuple[int, Mapping[str, int]]
#: What receives an event: channel, member, "join" or "leave".
EventHandler = Callable[[str, str, str], None]


def _script_text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


class RedisPresence:
    """One process's presence counts in Redis, the cluster's sums read back, and its events."""

    def __init__(self, client: Callable[[], Any], prefix: str, refresh: float) -> None:
        self._client = client  # called on first use: building an app in a master imports no redis
        self._prefix = prefix
        self.refresh = refresh
        self._ttl_ms = int(refresh * LIVES * 1000)
        self._process = uuid.uuid4().hex
        self._events = f"{prefix}:presence-events"
        self._greenlets: list[gevent.Greenlet] = []
        self._local: Callable[[], Mapping[str, Counts]] = dict
        self._on_event: EventHandler = lambda channel, member, action: None
        self._scripts: tuple[Any, Any] | None = None

    @property
    def leave_within(self) -> float:
        """Seconds after which a killed process's members are no longer counted."""
        return self.refresh * LIVES

    def follow(self, local: Callable[[], Mapping[str, Counts]], on_event: EventHandler) -> None:
        """Take the heartbeat's counts from ``local``; hand cluster events to ``on_event``."""
        self._local, self._on_event = local, on_event

    def _hash(self, channel: str) -> str:
        return f"{self._prefix}:presence:{channel}"

    def _alive_prefix(self) -> str:
        return f"{self._prefix}:presence-alive:"

    def _script(self, index: int) -> Any:
        if self._scripts is None:
            client = self._client()
            self._scripts = (
                client.register_script(_script_text("presence.lua")),
                client.register_script(_script_text("presence_sweep.lua")),
            )
        return self._scripts[index]

    def _start(self) -> None:
        if self._greenlets:
            return
        subscribed = Event()
        self._greenlets = [gevent.spawn(self._beat), gevent.spawn(self._listen, subscribed)]
        subscribed.wait(SUBSCRIBE_WAIT)

    def write(self, channel: str, connections: int, member: str | None, count: int, change: str) -> None:
        """Store this process's counts on ``channel`` after ``member``'s local count became
        ``count`` (``change``: "join" for its first local stream, "leave" for its last, else "").
        A Redis failure is logged: the stream opens or ends whatever Redis does, and the next
        heartbeat writes the counts again."""
        self._start()
        keys = [self._hash(channel)]
        args = [self._process, member or "", count, connections, self._ttl_ms]
        args += [self._alive_prefix(), self._events, channel, change if member else ""]
        try:
            self._script(0)(keys=keys, args=args)
        except _import_redis().RedisError as exc:
            log.warning("presence: could not write the counts of %s to Redis (%s)", channel, exc)

    def _beat(self) -> None:
        while True:
            gevent.sleep(self.refresh)
            try:
                self._refresh(self._local())
            except _import_redis().RedisError as exc:
                log.warning("presence: heartbeat could not reach Redis (%s)", exc)
            except Exception:  # a bug of ours must not end the heartbeat, and the counts with it
                log.exception("presence: heartbeat failed")

    def _refresh(self, counts: Mapping[str, Counts]) -> None:
        """Rewrite every local count, renew the keys, and sweep the dead from each channel."""
        pipe = self._client().pipeline(transaction=False)
        pipe.set(self._alive_prefix() + self._process, 1, px=self._ttl_ms)
        for channel, (connections, members) in counts.items():
            key = self._hash(channel)
            fields = {f"{self._process}{_SEPARATOR}{m}": n for m, n in members.items()}
            fields[f"{self._process}{_SEPARATOR}"] = connections
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self._ttl_ms)
            self._script(1)(keys=[key], args=[self._alive_prefix(), self._events, channel], client=pipe)
        pipe.execute()

    def _listen(self, subscribed: Event) -> None:
        """Hand every published event to the local streams; resubscribe after a failure."""
        delay = 0.05
        while True:
            pubsub = None
            try:
                pubsub = self._client().pubsub()
                pubsub.subscribe(self._events)
                # Confirmed before any stream is told it may go on: what it does next is seen.
                confirmation = pubsub.get_message(timeout=SUBSCRIBE_WAIT)
                if confirmation is None or confirmation.get("type") != "subscribe":
                    raise _import_redis().ConnectionError("Redis did not confirm the presence subscription")
                subscribed.set()
                delay = 0.05
                while True:
                    item = pubsub.get_message(timeout=5.0)
                    if item is not None and item.get("type") == "message":
                        self._handle(item["data"])
            except _import_redis().RedisError as exc:
                log.warning("presence: events subscription lost (%s); resubscribing", exc)
            except Exception:
                log.exception("presence: events listener failed; resubscribing")
            finally:
                if pubsub is not None:
                    pubsub.close()
            gevent.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 2.0)

    def _handle(self, data: bytes) -> None:
        event = json.loads(data)
        self._on_event(event["channel"], event["member"], event["action"])

    def read(self, channel: str) -> tuple[int, dict[str, int]]:
        """The cluster's streams on ``channel``, and its members' counts, from live processes;
        a 503 ``Refusal`` when Redis does not answer."""
        try:
            return self._read(channel)
        except _import_redis().RedisError as exc:
            raise Refusal("Presence unavailable", f"Redis did not answer ({exc})", status=503) from exc

    def _read(self, channel: str) -> tuple[int, dict[str, int]]:
        client = self._client()
        fields: dict[bytes, bytes] = client.hgetall(self._hash(channel))
        parsed = [(f.decode().partition(_SEPARATOR), int(v)) for f, v in fields.items()]
        processes = sorted({process for (process, _, _), _ in parsed})
        keys = [self._alive_prefix() + p for p in processes]
        alive = dict(zip(processes, client.mget(keys), strict=True)) if processes else {}
        connections, members = 0, dict[str, int]()
        for (process, _, member), count in parsed:
            if alive.get(process) is None:
                continue  # a dead process's: the sweep deletes it and announces the leave
            if member:
                members[member] = members.get(member, 0) + count
            else:
                connections += count
        return connections, members

    def close(self) -> None:
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self._greenlets = []
