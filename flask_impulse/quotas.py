"""Per-client stream quotas: how many streams one address, and one token, may hold open.

Counts live in the worker process (gevent runs one greenlet at a time, so a check and its
increment cannot interleave); with several workers, each enforces the quota on its own
streams. Tokens are counted by their keyed hash, never by value. An IPv6 client is counted
by its /64 network: one host usually holds a whole /64, and could otherwise take a new
address for every stream.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from .errors import AccessDenied

#: Seconds a refused client is asked to wait: its own streams must close first.
RETRY_AFTER = "5"

Key = TypeVar("Key", str, bytes)


class TooManyStreams(AccessDenied):
    status = 429


class StreamQuotas:
    """Counts open streams per client address and per token key."""

    def __init__(self, per_ip: int, per_token: int) -> None:
        self.per_ip = per_ip
        self.per_token = per_token
        self._by_ip: Counter[str] = Counter()
        self._by_token: Counter[bytes] = Counter()

    def acquire(self, ip: str | None, token_key: bytes | None) -> Callable[[], None]:
        """Count one stream, or raise ``TooManyStreams``; the returned function gives the
        stream back, once, however often it is called."""
        ip = client_key(ip) if ip else None
        if self.per_ip and ip and self._by_ip[ip] >= self.per_ip:
            raise TooManyStreams(
                f"this address holds its limit of {self.per_ip} open streams (IMPULSE_MAX_STREAMS_PER_IP); "
                "behind a proxy, set IMPULSE_TRUSTED_PROXIES so that clients are told apart",
                error="Too many streams",
                check="streams_per_ip",
                headers={"Retry-After": RETRY_AFTER},
            )
        if self.per_token and token_key is not None and self._by_token[token_key] >= self.per_token:
            raise TooManyStreams(
                f"this token holds its limit of {self.per_token} open streams (IMPULSE_MAX_STREAMS_PER_TOKEN)",
                error="Too many streams",
                check="streams_per_token",
                headers={"Retry-After": RETRY_AFTER},
            )
        if ip:
            self._by_ip[ip] += 1
        if token_key is not None:
            self._by_token[token_key] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            if ip:
                _decrement(self._by_ip, ip)
            if token_key is not None:
                _decrement(self._by_token, token_key)

        return release


def client_key(address: str) -> str:
    """What the per-address quota counts: an IPv4 address, or an IPv6 address's /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a unix socket's peer): counted as it is
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def _decrement(counter: Counter[Key], key: Key) -> None:
    """One stream fewer; a key whose count reaches zero is forgotten, so memory follows open streams."""
    if counter[key] > 1:
        counter[key] -= 1
    else:
        del counter[key]
