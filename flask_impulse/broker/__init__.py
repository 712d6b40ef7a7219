"""The broker: accepts pushes, fans them out to local connections, and ends streams on drain.

Each channel with open streams has its own blinker signal, and each connection on the channel
is connected to it: a push reaches the queues of that channel's connections only,
never a scan over every connection. A channel's signal is dropped with its last connection,
so memory follows the open streams however many channels come and go. (One signal for all
channels, keyed by sender, kept an empty entry for every channel ever seen and scanned them
all on each disconnect.)
"""

from __future__ import annotations

import hashlib
import random
import time
import weakref
from collections.abc import Iterable
from typing import Any, cast

import blinker
import gevent

from .. import _json, metrics
from .._missing import MISSING
from ..errors import PushError, TooManyConnections
from ..instance import StreamCount
from .backplane import Backplane, Draft, MemoryBackplane, Published
from .connection import Connection
from .history import Replay
from .message import Message, parse_id

__all__ = ["Backplane", "Broker", "Connection", "Draft", "MemoryBackplane", "Message", "Published", "live_brokers"]


_live_brokers: weakref.WeakSet[Broker] = weakref.WeakSet()


def live_brokers() -> list[Broker]:
    """Every broker alive in this process: what a worker drains when it exits."""
    return list(_live_brokers)


class Broker:
    """One per app per process: the registry of open streams and the door to the backplane."""

    def __init__(
        self,
        backplane: Backplane,
        *,
        token_hash_key: bytes,
        max_connections: int,
        queue_max_messages: int,
        queue_max_bytes: int,
        drain_window: float = 2.0,
        retry_ms: int = 1000,
    ) -> None:
        self.backplane = backplane
        self._token_hash_key = token_hash_key
        self._max_connections = max_connections
        self._queue_max_messages = queue_max_messages
        self._queue_max_bytes = queue_max_bytes
        self._drain_window = drain_window
        self._retry_ms = retry_ms
        self._channels: dict[str, blinker.Signal] = {}
        self.connections: set[Connection] = set()
        # The connections the metrics counted as opened: only those may be counted as closed,
        # or metrics switched on while streams were open would take the gauge below zero.
        self._counted: set[Connection] = set()
        self._count = StreamCount()
        self.started = time.time()
        self.draining = False
        self._watched = False
        backplane.start(self.deliver)
        _live_brokers.add(self)

    # -- tokens ---------------------------------------------------------------------
    def audience_key(self, token: str) -> bytes:
        """The keyed hash that stands in for a token wherever one is kept or compared."""
        return hashlib.blake2b(token.encode(), key=self._token_hash_key, digest_size=16).digest()

    def idempotency_hash(self, key: str) -> bytes:
        """The keyed hash under which a publisher's idempotency key is remembered: the key itself
        is never stored, and the prefix keeps it apart from token hashes made with the same key."""
        return hashlib.blake2b(b"idempotency\0" + key.encode(), key=self._token_hash_key, digest_size=16).digest()

    # -- subscribers ------------------------------------------------------------------
    def open(self, channels: tuple[str, ...], topic: str | None, token: str | None) -> Connection:
        if self.draining:
            raise TooManyConnections(
                "Service shutting down", "reconnect to another instance", headers={"Retry-After": "1"}
            )
        if len(self.connections) >= self._max_connections:
            raise TooManyConnections(
                "Too many connections",
                f"this worker holds its limit of {self._max_connections} streams (IMPULSE_MAX_CONNECTIONS)",
                headers={"Retry-After": str(random.randint(1, 5))},
            )
        connection = Connection(
            channels,
            topic,
            self.audience_key(token) if token is not None else None,
            max_messages=self._queue_max_messages,
            max_bytes=self._queue_max_bytes,
        )
        self.connections.add(connection)
        self._count.publish(len(self.connections))
        for channel in channels:
            signal = self._channels.get(channel)
            if signal is None:
                signal = self._channels[channel] = blinker.Signal(f"published on {channel}")
            signal.connect(connection, weak=False)
        self.backplane.attach(connection)
        recorder = metrics.recorder
        if recorder.enabled:
            recorder.opened()
            self._counted.add(connection)
            if not self._watched:
                self._watched = True
                recorder.watch(self)
        return connection

    def release(self, connection: Connection) -> None:
        """Forget a connection; safe to call more than once."""
        if connection in self.connections:
            self.connections.discard(connection)
            self._count.publish(len(self.connections))
            if connection in self._counted:  # not a stream opened before metrics were on
                self._counted.discard(connection)
                metrics.recorder.closed()
            for channel in connection.channels:
                signal = self._channels.get(channel)
                if signal is not None:
                    signal.disconnect(connection)
                    if not signal.receivers:
                        del self._channels[channel]

    @property
    def stream_count(self) -> StreamCount:
        """Where this broker's figures meet its instance's other workers' (``instance.py``)."""
        return self._count

    def channel_counts(self) -> dict[str, int]:
        """Open streams per channel in this process (a multi-channel stream counts on each)."""
        return {name: len(signal.receivers) for name, signal in self._channels.items()}

    def instance_connections(self) -> int:
        """The open streams of every worker of this instance (this process's alone when embedded)."""
        return self._count.total(len(self.connections))

    def replay(self, connection: Connection, last_event_id: str) -> Replay:
        """The messages ``connection`` missed after ``last_event_id``, filtered by its audience."""
        replay = self.backplane.replay(connection.channels, parse_id(last_event_id))
        if replay.skip_through is not None:
            connection.skip_through(replay.skip_through)
        return Replay([m for m in replay.messages if connection.matches(m)], replay.gap)

    # -- publishers -------------------------------------------------------------------
    def draft(
        self,
        channel: str,
        payload: Any,
        tokens: Iterable[str] | None,
        topic: str | None,
        idempotency_key: str | None = None,
    ) -> Draft:
        """Encode a push once, whatever the number of connections it will reach."""
        try:
            data = _json.dumps({"channel": channel} if payload is MISSING else {"channel": channel, "payload": payload})
        except (TypeError, ValueError) as exc:
            raise PushError("Invalid request body", f"payload cannot be encoded as JSON: {exc}") from exc
        audience = frozenset(self.audience_key(t) for t in tokens) if tokens is not None else None
        idempotency = self.idempotency_hash(idempotency_key) if idempotency_key is not None else None
        return Draft(channel, data, topic, audience, idempotency)

    def publish(self, draft: Draft) -> Published:
        metrics.recorder.published()
        return self.backplane.publish(draft)

    def publish_many(self, drafts: list[Draft]) -> list[Published]:
        metrics.recorder.published(len(drafts))
        return self.backplane.publish_many(drafts)

    def deliver(self, message: Message) -> int:
        """Hand ``message`` to this process's connections on its channel; count the takers."""
        signal = self._channels.get(message.channel)
        if signal is None:
            return 0
        # The channel's connections are taken from its signal and offered the message directly
        # rather than through send(): send() costs about 3 us per receiver (it checks each for a
        # coroutine and collects results), a direct call about 0.6 us, and this runs once per
        # message per connection. The tuple guards the loop against a receiver list that changes
        # under it. Receivers are connected with weak=False, so each is the connection itself;
        # the matching rule then picks, once per message, the connections it is for.
        connections = cast("tuple[Connection, ...]", tuple(signal.receivers.values()))
        sent = sum([connection.offer(message) for connection in Connection.select(connections, message)])
        metrics.recorder.delivered(sent)
        return sent

    # -- shutdown ---------------------------------------------------------------------
    def drain(self) -> gevent.Greenlet:
        """End every stream within the drain window, at random moments so that clients do
        not all reconnect at once; each is told to retry after the retry delay plus jitter."""
        self.draining = True
        window, retry_ms = self._drain_window, self._retry_ms

        def close_all() -> None:
            connections = list(self.connections)
            random.shuffle(connections)
            step = window / max(len(connections), 1)
            started = time.monotonic()
            for index, connection in enumerate(connections):
                connection.close("service draining", retry_ms + random.randint(0, retry_ms))
                # Against the clock, not step by step: the writers woken in between take time too.
                gevent.sleep(max(started + (index + 1) * step - time.monotonic(), 0))

        return gevent.spawn(close_all)
