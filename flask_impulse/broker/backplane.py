"""Where an accepted push goes before it reaches local connections.

The broker does the local fan-out; a backplane only issues the message id, keeps the
history, and brings every message (its own and other processes') to ``deliver``. The
in-memory backplane does this inside one process; the Redis backplane does it across
workers and replicas, behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .history import MemoryHistory, Replay
from .idempotency import MAX_KEYS, IdempotencyStore
from .message import IdClock, Message, MessageKey

if TYPE_CHECKING:
    from .connection import Connection

Deliver = Callable[[Message], int]


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated push, encoded, waiting for its id."""

    channel: str
    data: bytes
    topic: str | None
    audience: frozenset[bytes] | None
    #: keyed hash (16 bytes) of the publisher's idempotency key; never the key itself
    idempotency: bytes | None = None


@dataclass(frozen=True, slots=True)
class Published:
    id: str
    sent: int
    #: True: a push with the same idempotency key was accepted within the TTL; nothing was
    #: delivered now, and id/sent are the first push's
    duplicate: bool = False


class Backplane(ABC):
    """Issues ids, keeps history, and carries each message to every process's ``deliver``."""

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    @abstractmethod
    def publish(self, draft: Draft) -> Published:
        """Accept a message for delivery everywhere, or raise ``BackplaneUnavailable``."""

    def publish_many(self, drafts: Sequence[Draft]) -> list[Published]:
        """Accept a batch; a backplane that can take it all or none at once overrides this."""
        return [self.publish(draft) for draft in drafts]

    def attach(self, connection: Connection) -> None:
        """A local stream opened: a shared backplane makes sure this process hears its channels."""
        return None  # one process hears everything already

    @abstractmethod
    def replay(self, channels: Iterable[str], after: MessageKey | None) -> Replay:
        """The retained messages on ``channels`` after ``after``, oldest first.

        ``gap`` is True when messages after ``after`` may be missing from the replay: ``after``
        is None (not an id this service issues), newer than any id issued yet (another
        service's, or forged), or older than what is retained on one of ``channels``.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections and background greenlets."""


class MemoryBackplane(Backplane):
    """One process: delivery is a direct call, so ``sent`` is exact."""

    def __init__(
        self,
        history_size: int,
        history_ttl: float,
        history_max_bytes: int = 0,
        *,
        idempotency_ttl: float = 600.0,
        idempotency_max_keys: int = MAX_KEYS,
    ) -> None:
        self._clock = IdClock()
        self.history = MemoryHistory(history_size, history_ttl, self._clock.now(), history_max_bytes)
        self.idempotency = IdempotencyStore(idempotency_ttl, idempotency_max_keys) if idempotency_ttl > 0 else None

    def publish(self, draft: Draft) -> Published:
        # Nothing in here yields to another greenlet, so a repeat of the key cannot slip in
        # between the look-up and the remembering.
        store, key = self.idempotency, draft.idempotency
        if store is not None and key is not None:
            first = store.first(key)
            if first is not None:
                return replace(first, duplicate=True)
        message = Message.create(self._clock.next(), draft.channel, draft.data, draft.topic, draft.audience)
        self.history.append(message)
        published = Published(message.id, self._deliver(message))
        if store is not None and key is not None:
            store.remember(key, published)
        return published

    def replay(self, channels: Iterable[str], after: MessageKey | None) -> Replay:
        return self.history.replay(channels, after, self._clock.now())

    def close(self) -> None:
        """Nothing to release: the history goes with the process."""
