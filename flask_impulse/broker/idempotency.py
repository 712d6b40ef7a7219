"""What one process remembers of the idempotency keys it accepted, without Redis.

A publisher that retries a push it is not sure about sends the same ``Idempotency-Key``; the
first push's answer is kept under the key's keyed hash (never the key) for the TTL, and a
repeat gets that answer back, marked as a duplicate, instead of a second delivery.

Memory is bounded: at most ``max_keys`` keys are held. Keys are kept in the order they were
accepted, which with one TTL for all is also the order they expire in, so expiring and
evicting are both taken from the front in constant time. When the bound is reached before
the TTL ends, the oldest key is forgotten early: the guarantee then holds for as long as the
process took to accept ``max_keys`` more keyed pushes, not for the whole TTL (docs/reliability.md).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backplane import Published

#: Keys one process remembers at most, unless told otherwise (IMPULSE_IDEMPOTENCY_MAX_KEYS):
#: about 360 bytes each with the hash and the id, so some 18 MB when full.
MAX_KEYS = 50_000


class IdempotencyStore:
    """The first answer to each idempotency key seen within ``ttl`` seconds, at most ``max_keys``."""

    def __init__(self, ttl: float, max_keys: int = MAX_KEYS) -> None:
        self._ttl = ttl
        self._max_keys = max_keys
        #: hash -> (monotonic expiry, the first answer); oldest first.
        self._entries: OrderedDict[bytes, tuple[float, Published]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def first(self, key: bytes) -> Published | None:
        """The first answer to ``key``, if it is remembered still."""
        self._expire(time.monotonic())
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def remember(self, key: bytes, published: Published) -> None:
        """Keep ``published`` as the answer to ``key`` for the TTL, forgetting the oldest beyond the bound."""
        entries = self._entries
        entries[key] = (time.monotonic() + self._ttl, published)
        while len(entries) > self._max_keys:
            entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (expires, _) = next(iter(entries.items()))
            if expires > now:
                return
            del entries[key]
