"""Message history in memory, for Last-Event-ID resume: per channel, and bounded in bytes overall."""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .message import Framed, Message, MessageKey

#: Bytes a retained message holds besides its frame (its record, its id key, its time and its
#: place in the channel's list and in the eviction order), and a channel besides its name (its
#: list and dict entries), as measured with tracemalloc on CPython 3.11 and rounded up: what the
#: byte bound counts, so that it bounds what the process really holds.
MESSAGE_OVERHEAD = 224
CHANNEL_OVERHEAD = 250


@dataclass(frozen=True)
class Replay:
    """What a resuming stream is sent before it goes live."""

    messages: Sequence[Framed]
    #: True when messages after the client's id may be missing: the client gets ``event: gap``.
    gap: bool
    #: Live messages up to this key are the client's already: with a shared backplane, another
    #: process may have sent them to the client before this one delivers them here.
    skip_through: MessageKey | None = None


def may_have_missed(
    after: MessageKey,
    *,
    issued: MessageKey | None,
    lost_through: MessageKey | None,
    first: MessageKey | None = None,
    truncated: bool = False,
) -> bool:
    """The gap rule, for every backplane: whether messages after ``after`` may be missing.

    They may when ``after`` is newer than any id issued (another service's, or forged),
    older than ``first`` (the first id of the history now serving: what came after older ids
    did not survive a restart), not newer than ``lost_through`` (the newest message that left
    the history), or when the history held more than was read (``truncated``).
    """
    return (
        (issued is not None and after > issued)
        or (first is not None and after < first)
        or (lost_through is not None and lost_through > after)
        or truncated
    )


class _Retained:
    """A retained message without what only live delivery needs (its channel is the dict key,
    and its chunked framing): a retained message costs its frame plus ``MESSAGE_OVERHEAD``,
    not twice its frame. It is :class:`.Framed`, which is what a replay sends."""

    __slots__ = ("audience", "frame", "key", "published_at", "topic")

    def __init__(self, message: Message) -> None:
        self.key = message.key
        self.frame = message.frame
        self.topic = message.topic
        self.audience = message.audience
        self.published_at = message.published_at


def _key_of(entry: _Retained) -> MessageKey:
    return entry.key


class MemoryHistory:
    """Keeps the last ``size`` messages of each channel, each for at most ``ttl`` seconds, and
    at most ``max_bytes`` in all (0: no bound), the oldest across channels leaving first.

    ``_evicted`` remembers, per channel, the newest key that has left the history, which is
    what lets :meth:`replay` tell an id that is merely old (nothing missed) from one whose
    successors are gone (a gap). Ids from before this process started are gaps as well: in
    memory, whatever came after them did not survive the restart.

    Memory follows the retained messages: ``_order`` names the channel of every message in
    the order they came, so that the oldest message of all (by age or by the byte bound)
    leaves in constant time, and a channel left empty is forgotten. Its evicted key is folded
    into ``_forgotten``, one key for all forgotten channels, so that an id older than anything
    forgotten still reads as a gap (at worst a gap is reported that was not one, never the
    reverse). A message that left its channel by the per-channel count stays in ``_order``
    until it reaches the front (``_stale`` counts them per channel: they are that channel's
    first entries); ``_order`` is rebuilt when such entries outnumber the retained messages.
    """

    def __init__(self, size: int, ttl: float, started: MessageKey, max_bytes: int = 0) -> None:
        self._size = size
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._started = started
        self._channels: dict[str, list[_Retained]] = {}
        self._evicted: dict[str, MessageKey] = {}
        self._forgotten: MessageKey = (0, 0)
        self._order: deque[str] = deque()
        self._stale: dict[str, int] = {}
        self._count = 0
        #: What the retained messages and channels cost, as the bound counts it.
        self.bytes = 0

    def append(self, message: Message) -> None:
        if self._size == 0:
            return
        channel = message.channel
        retained = self._channels.get(channel)
        if retained is None:
            retained = self._channels[channel] = []
            self.bytes += CHANNEL_OVERHEAD + len(channel)
        elif len(retained) >= self._size:
            # A list, not a deque: a deque costs 600 bytes however few it holds, and most
            # channels (one per user) hold one or two messages. Dropping the first of at most
            # IMPULSE_HISTORY_SIZE pointers is one short memmove.
            self._drop(channel, retained.pop(0))
            self._stale[channel] = self._stale.get(channel, 0) + 1
        retained.append(_Retained(message))
        self._order.append(channel)
        self._count += 1
        self.bytes += MESSAGE_OVERHEAD + len(message.frame)
        self.expire()
        if len(self._order) > 2 * self._count + 1024:
            self._compact()

    def replay(self, channels: Iterable[str], after: MessageKey | None, issued: MessageKey | None = None) -> Replay:
        """The retained messages of ``channels`` after ``after``; ``issued``: the newest key issued."""
        if after is None:
            return Replay([], gap=True)
        self.expire()
        lost_through = self._forgotten
        messages: list[_Retained] = []
        sources = 0
        for channel in channels:
            lost_through = max(lost_through, self._evicted.get(channel, lost_through))
            retained = self._channels.get(channel)
            if retained and retained[-1].key > after:  # in key order: what comes after is a slice
                messages += retained[bisect.bisect_right(retained, after, key=_key_of) :]
                sources += 1
        if sources > 1:
            messages.sort(key=_key_of)
        gap = may_have_missed(after, first=self._started, issued=issued, lost_through=lost_through)
        return Replay(messages, gap)

    def expire(self) -> None:
        """Drop the oldest messages while they are past their TTL or over the byte bound."""
        deadline = time.time() - self._ttl
        while self._order:
            channel = self._order[0]
            stale = self._stale.get(channel)
            if stale:
                self._order.popleft()
                if stale == 1:
                    del self._stale[channel]
                else:
                    self._stale[channel] = stale - 1
                continue
            retained = self._channels[channel]
            over = self._max_bytes and self.bytes > self._max_bytes
            if not over and retained[0].published_at >= deadline:
                return
            self._order.popleft()
            self._drop(channel, retained.pop(0))
            if not retained:
                del self._channels[channel]
                self.bytes -= CHANNEL_OVERHEAD + len(channel)
                self._forgotten = max(self._forgotten, self._evicted.pop(channel))

    def _drop(self, channel: str, entry: _Retained) -> None:
        self._evicted[channel] = entry.key
        self._count -= 1
        self.bytes -= MESSAGE_OVERHEAD + len(entry.frame)

    def _compact(self) -> None:
        """Rebuild ``_order`` without the entries of messages gone by the per-channel count."""
        stale, order = self._stale, deque[str]()
        for channel in self._order:
            if stale.get(channel):
                stale[channel] -= 1
            else:
                order.append(channel)
        self._order, self._stale = order, {}

    @property
    def channels(self) -> int:
        """How many channels hold messages."""
        return len(self._channels)

    def __len__(self) -> int:
        return self._count
