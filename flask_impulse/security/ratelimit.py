"""The optional push rate limit: a token bucket per publisher (``IMPULSE_PUSH_RATE_LIMIT``).

A publisher is the secret it presented, or its address when the service takes pushes
without a secret. Each message costs one token, so a batch of 100 costs 100: batching saves
requests, not quota. A bucket holds at most one second's worth of tokens (the burst), and
it may go into debt: a request is admitted while the bucket holds a whole token, then pays
its whole cost. A batch larger than the burst is therefore never refused forever; the
publisher waits out the debt instead (``Retry-After`` says how long), and its average rate
stays at the limit.

The limit is per worker process: with N workers behind one port a publisher gets up to N
times the rate. In-process ``impulse.push()`` is never limited: it is the app itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..errors import PushError

#: Buckets kept before idle (full) ones are forgotten; bounds memory when publishers are
#: told apart by address.
_MAX_BUCKETS = 10_000


class PushRateLimiter:
    """``rate`` messages per second per publisher; ``charge`` raises a 429 ``PushError``."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = rate
        self.burst = max(rate, 1.0)
        self._clock = clock
        # publisher -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def charge(self, publisher: str, cost: int = 1) -> None:
        """Take ``cost`` tokens from ``publisher``'s bucket, or refuse with ``Retry-After``."""
        now = self._clock()
        tokens, counted = self._buckets.get(publisher, (self.burst, now))
        tokens = min(self.burst, tokens + (now - counted) * self.rate)
        if tokens < 1:
            self._buckets[publisher] = (tokens, now)
            wait = math.ceil((1 - tokens) / self.rate)
            raise PushError(
                "Too many requests",
                f"this publisher may push {self.rate:g} messages per second (IMPULSE_PUSH_RATE_LIMIT)",
                status=429,
                headers={"Retry-After": str(max(wait, 1))},
            )
        if publisher not in self._buckets and len(self._buckets) >= _MAX_BUCKETS:
            self._forget_idle(now)
        self._buckets[publisher] = (tokens - cost, now)

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing."""
        for publisher, (tokens, counted) in list(self._buckets.items()):
            if tokens + (now - counted) * self.rate >= self.burst:
                del self._buckets[publisher]
