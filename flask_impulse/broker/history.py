"""Per-channel message history in memory, for Last-Event-ID resume."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .message import Message, MessageKey

#: Bounds, in seconds, on how often every channel is swept for expired messages.
_SWEEP_MIN, _SWEEP_MAX = 1.0, 60.0


@dataclass(frozen=True)
class Replay:
    """What a resuming stream is sent before it goes live."""

    messages: list[Message]
    #: True when messages after the client's id may be missing: the client gets ``event: gap``.
    gap: bool
    #: Live messages up to this key are the client's already: with a shared backplane, another
    #: process may have sent them to the client before this one delivers them here.
    skip_through: MessageKey | None = None


class MemoryHistory:
    """Keeps the last ``size`` messages of each channel, each for at most ``ttl`` seconds.

    ``_evicted`` remembers, per channel, the newest key that has left the history, which is
    what lets :meth:`replay` tell an id that is merely old (nothing missed) from one whose
    successors are gone (a gap). Ids from before this process started are gaps as well: in
    memory, whatever came after them did not survive the restart.

    Memory follows the retained messages: expired messages are swept from every channel at
    least once a minute, and a channel left empty is forgotten. Its evicted key is folded
    into ``_forgotten``, one key for all forgotten channels, so that an id older than
    anything forgotten still reads as a gap (at worst a gap is reported that was not one,
    never the reverse).
    """

    def __init__(self, size: int, ttl: float, started: MessageKey) -> None:
        self._size = size
        self._ttl = ttl
        self._started = started
        self._channels: dict[str, deque[Message]] = {}
        self._evicted: dict[str, MessageKey] = {}
        self._forgotten: MessageKey = (0, 0)
        self._sweep_every = min(max(ttl, _SWEEP_MIN), _SWEEP_MAX)
        self._next_sweep = time.monotonic() + self._sweep_every

    def append(self, message: Message) -> None:
        if self._size == 0:
            return
        retained = self._channels.get(message.channel)
        if retained is None:
            retained = self._channels[message.channel] = deque()
        elif len(retained) >= self._size:
            self._evicted[message.channel] = retained.popleft().key
        retained.append(message)
        if time.monotonic() >= self._next_sweep:
            self.expire()

    def replay(self, channels: Iterable[str], after: MessageKey | None) -> Replay:
        if after is None:
            return Replay([], gap=True)
        gap = after < self._started
        messages: list[Message] = []
        for channel in channels:
            self._expire(channel)
            if max(self._evicted.get(channel, self._forgotten), self._forgotten) > after:
                gap = True
            retained = self._channels.get(channel)
            if retained:
                messages.extend(message for message in retained if message.key > after)
        if len(messages) > 1:
            messages.sort(key=lambda message: message.key)
        return Replay(messages, gap)

    def expire(self) -> None:
        """Drop messages past their TTL in every channel, and forget channels left empty."""
        self._next_sweep = time.monotonic() + self._sweep_every
        for channel in list(self._channels):
            self._expire(channel)

    def _expire(self, channel: str) -> None:
        retained = self._channels.get(channel)
        if retained is None:
            return
        deadline = time.time() - self._ttl
        while retained and retained[0].published_at < deadline:
            self._evicted[channel] = retained.popleft().key
        if not retained:
            del self._channels[channel]
            self._forgotten = max(self._forgotten, self._evicted.pop(channel))

    @property
    def channels(self) -> int:
        """How many channels hold messages."""
        return len(self._channels)

    def __len__(self) -> int:
        return sum(len(retained) for retained in self._channels.values())
