"""What every backplane shared between processes does, whatever carries its messages.

A shared backplane brings each process one stream of every message, in id order, and keeps
one history for all. This base holds the logic that does not depend on the store: the
listener greenlet and its backoff, the dedupe of what a catch-up delivered already, the
catch-up after a resubscription, the restart (epoch) rule, and the replay of the history
with the gap rule. A backend implements only publishing, listening (subscribe, receive one
item, ping) and one consistent read of its history with its epoch; the Redis backplane is one.
"""

from __future__ import annotations

import logging
import random
import weakref
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import gevent
from gevent.event import Event

from ..errors import ConfigurationError
from .backplane import Backplane, Draft
from .history import Replay, may_have_missed
from .message import Message, MessageKey, parse_id

if TYPE_CHECKING:
    from .connection import Connection

#: Seconds a stream opening before the process's first subscription waits for it; later
#: streams never wait (a listener that is resubscribing catches them up instead).
FIRST_SUBSCRIPTION_WAIT = 2.0
#: Silence on the subscription, in seconds, after which the listener pings the store; no answer
#: within as long again means the connection is dead (a half-open socket never errors).
PING_AFTER = 5.0
#: Resubscription backoff, in seconds: doubles from the first value up to the second, jittered.
BACKOFF = (0.05, 2.0)
#: Most messages handled per wake-up: the batch shares one delivery report to the store.
BATCH = 1000

#: A retained message as the store holds it: raw id, channel, body (see :func:`encode_body`).
Entry = tuple[bytes, str, bytes]
#: A message read from the subscription: its key, where its publisher waits for the delivery
#: count (empty: nowhere), its channel and its body.
Incoming = tuple[MessageKey, bytes, str, bytes]


def encode_body(draft: Draft) -> bytes:
    """What the store keeps and carries for a message, besides its id and channel.

    ``topic \\n audience \\n data``: channel and topic cannot hold a newline (control characters
    are refused) and compact JSON never does. The audience is ``*`` for everyone, or the hex
    keyed hashes of its tokens, comma-separated (empty: nobody).
    """
    topic = draft.topic.encode() if draft.topic is not None else b""
    audience = b"*" if draft.audience is None else b",".join(key.hex().encode() for key in draft.audience)
    return b"\n".join((topic, audience, draft.data))


def decode_message(key: MessageKey, channel: str, body: bytes) -> Message:
    topic, audience, data = body.split(b"\n", 2)
    return Message.create(
        key,
        channel,
        data,
        topic.decode() if topic else None,
        None if audience == b"*" else frozenset(bytes.fromhex(h.decode()) for h in audience.split(b",") if h),
        published_at=key[0] / 1000,
    )


def raw_key(raw: bytes) -> MessageKey:
    """The key of an id as the store returns it."""
    key = parse_id(raw.decode())
    if key is None:
        raise ValueError(f"not a message id: {raw!r}")
    return key


@dataclass(frozen=True, slots=True)
class Retained:
    """One consistent read of the shared history (one transaction)."""

    #: the first id issued by the store process now serving: older ids may have lost successors
    epoch: MessageKey
    #: the newest id issued, None before the first
    last: MessageKey | None
    #: the store's clock, in milliseconds
    now_ms: int
    #: the newest id that left the history
    trimmed: MessageKey | None
    #: the retained messages after the id asked for, newest first
    entries: list[Entry]
    #: True when more entries were retained than were read
    truncated: bool

    @property
    def issued(self) -> MessageKey:
        """A key at least as late as any issued: newer ids are another service's, or forged."""
        return max(self.last or (0, 0), (self.now_ms, 0))


class SharedBackplane(Backplane):
    """The listener, dedupe, catch-up, epoch and replay of a backplane shared between processes.

    Each process holds one subscription, opened by its first stream and read by one listener
    greenlet, which decodes each message once and hands it to the broker's fan-out.
    """

    #: What log lines and errors call the store.
    store: ClassVar[str]
    #: Where the listener reports.
    log: ClassVar[logging.Logger]

    def __init__(self, *, history_size: int, history_ttl: float, retry_ms: int) -> None:
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl * 1000) if history_size > 0 else 0
        self._retry_ms = retry_ms
        self._listener: gevent.Greenlet | None = None  # once a local stream needs one
        self._first_subscription: Event | None = None  # made with the listener, in the worker
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._delivered: MessageKey | None = None  # the newest message handed to local streams
        self._baseline: MessageKey | None = None  # the last id in the store when first subscribed
        self._epoch: MessageKey | None = None  # the epoch of the store process last subscribed to
        self._caught_up: dict[MessageKey, int] = {}  # delivery counts of caught-up messages, for reports

    @property
    def _history_on(self) -> bool:
        return self._history_ttl_ms > 0

    # -- what a backend implements -------------------------------------------------------
    @abstractmethod
    def _backend_error(self) -> type[Exception]:
        """What the store's client raises when the store cannot be reached or answer."""

    @abstractmethod
    def _subscribe(self) -> Any:
        """Open the subscription and wait for its confirmation; closed again if that fails."""

    @abstractmethod
    def _receive(self, subscription: Any, timeout: float) -> Any:
        """The next item read from ``subscription`` within ``timeout`` seconds, or None."""

    @abstractmethod
    def _unpack(self, item: Any) -> Incoming | None:
        """A received item as a message, or None for anything else (replies, malformed ones)."""

    @abstractmethod
    def _ping(self, subscription: Any) -> None:
        """Ask for an answer on ``subscription``: silence after it means a dead connection."""

    @abstractmethod
    def _unsubscribe(self, subscription: Any) -> None:
        """Close ``subscription``, quietly: a broken socket may fail to close."""

    @abstractmethod
    def _report(self, reports: dict[bytes, list[tuple[MessageKey, int]]]) -> None:
        """Tell waiting publishers how many local connections took each of their messages."""

    @abstractmethod
    def _read_history(self, after: MessageKey | None) -> Retained:
        """The epoch, the last id, the trimmed mark and (unless ``after`` is None) the entries
        after ``after``, in one transaction."""

    # -- history ---------------------------------------------------------------------------
    def replay(self, channels: Iterable[str], after: MessageKey | None) -> Replay:
        """Retained messages after ``after``, with the gap rule the in-memory history follows.

        A gap: ``after`` predates the store process now serving (see the epoch), a message
        after it left the history (by the total bound or age: any channel's, so a gap may be
        reported that was not one, never the reverse), a channel had more than its count since
        ``after``, or more were retained since than one read takes. When the store cannot be
        read, the stream still opens, with a gap event: the client learns it may have missed
        something.
        """
        if after is None or not self._history_on:
            return Replay([], gap=True)
        try:
            read = self._read_history(after)
        except self._backend_error() as exc:
            self.log.warning("replay: %s unavailable (%s); the stream opens with a gap event", self.store, exc)
            return Replay([], gap=True)
        gap = may_have_missed(
            after, first=read.epoch, issued=read.issued, lost_through=read.trimmed, truncated=read.truncated
        )
        cutoff_ms = read.now_ms - self._history_ttl_ms
        messages, lost = self._select(read.entries, set(channels), cutoff_ms, self._history_size)
        # The client has everything up to its id, which this process's listener may not have
        # delivered yet; never beyond the last id issued, so a foreign id cannot mute a stream.
        skip_through = min(after, read.last) if read.last is not None else None
        return Replay(messages, gap or lost, skip_through)

    @staticmethod
    def _select(
        newest_first: list[Entry], channels: set[str], cutoff_ms: int, per_channel: int
    ) -> tuple[list[Message], bool]:
        """The messages of ``channels`` among history entries, oldest first, each channel's
        newest ``per_channel`` only, past-TTL ones dropped; True if any was dropped."""
        kept: dict[str, int] = {}
        messages: list[Message] = []
        lost = False
        for raw_id, channel, body in newest_first:
            if channel not in channels:
                continue
            key = raw_key(raw_id)
            if key[0] < cutoff_ms or kept.get(channel, 0) >= per_channel:
                lost = True  # past its TTL (not yet trimmed), or beyond the channel's count
                continue
            kept[channel] = kept.get(channel, 0) + 1
            messages.append(decode_message(key, channel, body))
        messages.reverse()
        return messages, lost

    # -- subscribing -----------------------------------------------------------------------
    def attach(self, connection: Connection) -> None:
        """A local stream opened: make sure this process is subscribed.

        The first stream starts the listener and waits (briefly) for the subscription, so that
        a push made right after the stream opened is not missed. The connection is remembered
        weakly: after a resubscription, the listener catches up the channels of live streams.
        """
        self._connections.add(connection)
        if self._listener is None:
            # Imported here: a script that only publishes (no stream) never imports gevent.monkey.
            from gevent import monkey

            if not monkey.is_module_patched("socket"):
                # An unpatched socket would block the hub, and every stream with it.
                raise ConfigurationError(
                    f"streams with the {self.store} backplane need gevent-patched sockets: "
                    "serve the app with gunicorn's gevent worker (-k gevent)"
                )
            self._first_subscription = Event()
            self._listener = gevent.spawn(self._listen, self._first_subscription)
        first = self._first_subscription
        if first is not None and not first.is_set():
            first.wait(FIRST_SUBSCRIPTION_WAIT)

    def _listen(self, subscribed: Event) -> None:
        """The listener greenlet: subscribe, catch up, pump; on any failure, back off and redo."""
        delay = BACKOFF[0]
        failing = False
        while True:
            subscription = None
            try:
                subscription = self._subscribe()
                self._catch_up()
                subscribed.set()
                if failing:
                    self.log.warning("%s subscription restored", self.store)
                failing, delay = False, BACKOFF[0]
                self._pump(subscription)
            except (ConnectionError, self._backend_error()) as exc:
                if not failing:
                    self.log.warning("%s subscription lost (%s); resubscribing with backoff", self.store, exc)
                failing = True
            except Exception:
                self.log.exception("%s listener failed; resubscribing", self.store)
                failing = True
            finally:
                if subscription is not None:
                    self._unsubscribe(subscription)
            gevent.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF[1])

    def _pump(self, subscription: Any) -> None:
        awaiting_pong = False
        while True:
            item = self._receive(subscription, PING_AFTER)
            if item is None:
                if awaiting_pong:
                    raise ConnectionError(f"{self.store} did not answer a ping within {PING_AFTER}s")
                self._ping(subscription)
                awaiting_pong = True
                continue
            awaiting_pong = False
            batch = [item]
            try:
                while len(batch) < BATCH:
                    more = self._receive(subscription, 0.0)
                    if more is None:
                        break
                    batch.append(more)
            finally:
                # A client may hand over the last item a broken connection read, and raise on
                # the next call (redis-py does): what was read is delivered before the error
                # resubscribes.
                self._handle(batch)

    def _handle(self, batch: list[Any]) -> None:
        """Deliver a batch of received items locally, then report the counts to their publishers."""
        reports: dict[bytes, list[tuple[MessageKey, int]]] = {}
        for item in batch:
            incoming = self._unpack(item)
            if incoming is None:
                continue
            key, report, channel, body = incoming
            if self._delivered is not None and key <= self._delivered:
                count = self._caught_up.pop(key, 0)  # already delivered by a catch-up
            else:
                self._delivered = key
                count = self._deliver_safely(decode_message(key, channel, body))
            if report:
                reports.setdefault(report, []).append((key, count))
        if reports:
            self._report(reports)

    def _deliver_safely(self, message: Message) -> int:
        try:
            return self._deliver(message)
        except Exception:
            self.log.exception("local delivery of %s failed", message.id)
            return 0

    def _catch_up(self) -> None:
        """After a (re)subscription, deliver what the local streams missed while unsubscribed.

        Runs between the subscription's confirmation and the first message read from it, so
        that every message is either in the history read here or on the subscription (both,
        for some: ``_handle`` drops those). When the missed messages may not all be in
        history (some left it, or the store restarted: its epoch changed, and what the previous
        process acknowledged may be lost), the local streams are closed with a retry hint:
        they resume by Last-Event-ID and get the gap event that the normal resume path sends.
        """
        if self._baseline is None:
            position = self._read_history(None)
            self._epoch, self._baseline = position.epoch, position.last or (0, 0)
            return
        after = self._delivered or self._baseline
        read = self._read_history(after)
        restarted, self._epoch = read.epoch != self._epoch, read.epoch
        self._caught_up.clear()
        connections = list(self._connections)
        if restarted:
            reason = f"{self.store} restarted: messages may have been lost"
        elif not self._history_on:
            reason = f"messages may have been lost while resubscribing to {self.store} (history is off)"
        elif may_have_missed(after, issued=read.issued, lost_through=read.trimmed, truncated=read.truncated):
            reason = f"messages were lost while resubscribing to {self.store}"
        else:
            reason = ""
        if reason:
            if connections:
                self.log.warning("%s; closing %d local streams so that they resume", reason, len(connections))
            for connection in connections:
                connection.close(reason, self._retry_ms + random.randint(0, self._retry_ms))
            return
        # Everything still retained is delivered: the per-channel count and the TTL bound what
        # a resume replays, not what a live stream missed during a short disconnection.
        channels = {channel for connection in connections for channel in connection.channels}
        missed, _ = self._select(read.entries, channels, 0, len(read.entries))
        for message in missed:
            self._caught_up[message.key] = self._deliver_safely(message)
            self._delivered = message.key
        if missed:
            self.log.warning("caught up %d messages missed while resubscribing", len(missed))

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the listener; a backend then releases its connections."""
        if self._listener is not None:
            self._listener.kill(block=False)
            self._listener = None
