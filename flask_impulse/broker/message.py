"""A message as the broker carries it: routed, identified, and encoded exactly once."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Protocol

from ..sse import encode_message

#: An id's sortable form: (milliseconds since the epoch, sequence within that millisecond).
MessageKey = tuple[int, int]

# ASCII digits only: str.isdigit() and int() also take "²", Arabic-Indic digits and "1_0",
# none of which we issue, and some of which int() then refuses.
_ID = re.compile(r"([0-9]{1,16})-([0-9]{1,16})", re.ASCII)


class Framed(Protocol):
    """A message as a replay needs it: its key, what routes it, and its frame.

    The in-memory history keeps its messages in this shape, without the chunked copy of the
    frame that only live delivery needs, and a replay sends them as they are: building a
    :class:`Message` per replayed message cost a tenth of a reconnect storm.
    """

    @property
    def key(self) -> MessageKey: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def audience(self) -> frozenset[bytes] | None: ...
    @property
    def frame(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Message:
    """One push, ready for every connection it reaches.

    ``frame`` holds the complete SSE bytes (``id:`` and ``data:`` lines). It is built once,
    when the message is created, and written unchanged to each matching connection.
    ``audience`` holds keyed hashes of the audience tokens, never the tokens themselves.
    ``chunk`` is ``frame`` in HTTP/1.1 chunked framing, for connections written directly.
    """

    key: MessageKey
    channel: str
    topic: str | None
    audience: frozenset[bytes] | None
    frame: bytes
    published_at: float
    chunk: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk", b"%X\r\n%s\r\n" % (len(self.frame), self.frame))

    @property
    def id(self) -> str:
        return format_id(self.key)

    @classmethod
    def create(
        cls,
        key: MessageKey,
        channel: str,
        data: bytes,
        topic: str | None = None,
        audience: frozenset[bytes] | None = None,
        published_at: float | None = None,
    ) -> Message:
        frame = encode_message(format_id(key), data)
        return cls(key, channel, topic, audience, frame, published_at or time.time())


def format_id(key: MessageKey) -> str:
    return f"{key[0]}-{key[1]}"


def parse_id(value: str) -> MessageKey | None:
    """The key of an id we issued, or None for anything else."""
    match = _ID.fullmatch(value)
    if match is None:
        return None
    return int(match[1]), int(match[2])


class IdClock:
    """Issues ids that increase strictly and do not repeat across restarts.

    An id is the wall-clock millisecond plus a sequence number within it, the same form
    Redis stream ids take, so the Redis backplane can issue cluster-wide ids in it too. If
    the clock steps back, ids keep counting from the last one rather than going back.
    """

    def __init__(self) -> None:
        self._last: MessageKey = (0, 0)

    def next(self) -> MessageKey:
        now = int(time.time() * 1000)
        last_ms, sequence = self._last
        self._last = (now, 0) if now > last_ms else (last_ms, sequence + 1)
        return self._last

    def now(self) -> MessageKey:
        """A key at least as late as any issued so far: messages after it are not yet issued."""
        return max(self._last, (int(time.time() * 1000), 0))
