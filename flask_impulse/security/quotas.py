"""Per-client stream quotas: how many streams one address, and one token, may hold open.

Counts live in the worker process (gevent runs one greenlet at a time, so a check and its
increment cannot interleave); with several workers, each enforces the quota on its own
streams. Tokens are counted by their keyed hash, never by value. An IPv6 client is counted
by its /64 network: one host usually holds a whole /64, and could otherwise take a new
address for every stream. Addresses in the exempt networks (by default this host and the
private ranges, where proxies, load balancers and NATs speak for many clients) are not
counted per address; their streams still count per token.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..errors import ConfigurationError, TooManyStreams

#: Seconds a refused client is asked to wait: its own streams must close first.
RETRY_AFTER = "5"

Key = TypeVar("Key", str, bytes)


class StreamQuotas:
    """Counts open streams per client address and per token key."""

    def __init__(self, per_ip: int, per_token: int, exempt: Iterable[str] = ()) -> None:
        self.per_ip = per_ip
        self.per_token = per_token
        try:
            self.exempt = tuple(ipaddress.ip_network(network, strict=False) for network in exempt)
        except ValueError as exc:
            raise ConfigurationError(f"IMPULSE_STREAMS_PER_IP_EXEMPT: {exc}") from None
        self._by_ip: Counter[str] = Counter()
        self._by_token: Counter[bytes] = Counter()
        # Addresses as counted, remembered: parsing one cost a stream opened 2% of its CPU.
        self._counted: dict[str, str | None] = {}

    def acquire(self, ip: str | None, token_key: bytes | None) -> Callable[[], None]:
        """Count one stream, or raise ``TooManyStreams``; the returned function gives the
        stream back, once, however often it is called."""
        ip = self._counted_address(ip)
        if ip is not None and self._by_ip[ip] >= self.per_ip:
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
        if ip is not None:
            self._by_ip[ip] += 1
        if token_key is not None:
            self._by_token[token_key] += 1
        return _Held(self, ip, token_key)

    def _counted_address(self, address: str | None) -> str | None:
        """What the per-address quota counts ``address`` as (an IPv4 address, or an IPv6
        address's /64), or None when it is not counted."""
        if not address or not self.per_ip:
            return None
        counted = self._counted.get(address, _UNKNOWN)
        if counted is _UNKNOWN:
            if len(self._counted) >= _REMEMBERED_ADDRESSES:
                self._counted.clear()  # bounded, whatever the addresses clients come from
            counted = self._counted[address] = self._count_as(address)
        return counted  # type: ignore[return-value]

    def _count_as(self, address: str) -> str | None:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return address  # not an IP (a unix socket's peer): counted as it is
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        if any(parsed in network for network in self.exempt):
            return None
        if isinstance(parsed, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((parsed, 64), strict=False))
        return str(parsed)


_UNKNOWN = object()
_REMEMBERED_ADDRESSES = 10_000


class _Held:
    """One counted stream; calling it gives the stream back, once. An object with slots, not
    a closure: every open stream holds one (about 220 bytes less)."""

    __slots__ = ("_ip", "_quotas", "_token_key")

    def __init__(self, quotas: StreamQuotas, ip: str | None, token_key: bytes | None) -> None:
        self._quotas: StreamQuotas | None = quotas
        self._ip = ip
        self._token_key = token_key

    def __call__(self) -> None:
        quotas, self._quotas = self._quotas, None
        if quotas is None:
            return  # given back already
        if self._ip is not None:
            _decrement(quotas._by_ip, self._ip)
        if self._token_key is not None:
            _decrement(quotas._by_token, self._token_key)


def _decrement(counter: Counter[Key], key: Key) -> None:
    """One stream fewer; a key whose count reaches zero is forgotten, so memory follows open streams."""
    if counter[key] > 1:
        counter[key] -= 1
    else:
        del counter[key]
