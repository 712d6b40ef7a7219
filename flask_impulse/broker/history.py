"""Per-channel message history in memory, for Last-Event-ID resume."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .message import Message, MessageKey


@dataclass(frozen=True)
class Replay:
    """What a resuming stream is sent before it goes live."""

    messages: list[Message]
    #: True when messages after the client's id may be missing: the client gets ``event: gap``.
    gap: bool


class MemoryHistory:
    """Keeps the last ``size`` messages of each channel, each for at most ``ttl`` seconds.

    ``_evicted`` remembers, per channel, the newest key that has left the history, which is
    what lets :meth:`replay` tell an id that is merely old (nothing missed) from one whose
    successors are gone (a gap). Ids from before this process started are gaps as well: in
    memory, whatever came after them did not survive the restart.
    """

    def __init__(self, size: int, ttl: float, started: MessageKey) -> None:
        self._size = size
        self._ttl = ttl
        self._started = started
        self._channels: dict[str, deque[Message]] = {}
        self._evicted: dict[str, MessageKey] = {}

    def append(self, message: Message) -> None:
        if self._size == 0:
            return
        retained = self._channels.get(message.channel)
        if retained is None:
            retained = self._channels[message.channel] = deque()
        elif len(retained) >= self._size:
            self._evicted[message.channel] = retained.popleft().key
        retained.append(message)

    def replay(self, channels: Iterable[str], after: MessageKey | None) -> Replay:
        if after is None:
            return Replay([], gap=True)
        gap = after < self._started
        messages: list[Message] = []
        for channel in channels:
            self._expire(channel)
            evicted = self._evicted.get(channel)
            if evicted is not None and evicted > after:
                gap = True
            retained = self._channels.get(channel)
            if retained:
                messages.extend(message for message in retained if message.key > after)
        if len(messages) > 1:
            messages.sort(key=lambda message: message.key)
        return Replay(messages, gap)

    def expire(self) -> None:
        """Drop messages past their TTL in every channel, and forget channels left empty."""
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
            # Once a channel's history is empty, any older id is simply a gap; the evicted key
            # stays so that replay can say so, but it is all that remains of the channel.

    def __len__(self) -> int:
        return sum(len(retained) for retained in self._channels.values())
