"""Presence: who is on a channel, counted from the open streams of this process.

Opt-in per channel pattern (``IMPULSE_PRESENCE_CHANNELS``). Only the opening and the end of
a stream on such a channel touch it, never a push: the fan-out's per-message cost is the same
with presence on or off. A member is present while any of its streams is open; its first
stream announces ``join`` and its last ``leave``, as a named ``presence`` event to the
channel's streams that asked with ``?presence=1`` (docs/presence.md).

Without Redis the counts and events are this process's (one worker, or one embedded app).
With Redis, every process also writes its counts to keys that expire, an answer sums those of
the live processes, and join and leave are the cluster's (``broker/presence_store.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _json
from .broker import Connection, Message
from .errors import Refusal
from .security.tokens import matches
from .sse import encode_event

if TYPE_CHECKING:
    from .broker.presence_store import Counts, RedisPresence

#: The key of a presence event: below every issued id, so that it never moves a resuming
#: stream's skip mark (``Connection._drop_replayed``) past a live message. The price: a
#: stream resuming by Last-Event-ID drops the presence events that come before its first
#: live message.
_EVENT_KEY = (0, 0)


@dataclass
class _Channel:
    """One presence channel's open streams in this process."""

    connections: int = 0
    members: dict[str, int] = field(default_factory=dict)
    watchers: set[Connection] = field(default_factory=set)


class Presence:
    """The members of the presence channels, by stream, in this process."""

    def __init__(self, patterns: Iterable[str], max_members: int, store: RedisPresence | None = None) -> None:
        self.patterns = tuple(patterns)
        self.max_members = max_members
        #: With Redis, where the counts of every process meet; None: this process's are the answer.
        self.store = store
        if store is not None:
            store.follow(self._counts, self._receive)
        self._channels: dict[str, _Channel] = {}
        #: What each tracked stream counted: its presence channels, its member, whether it watches.
        self._streams: dict[Connection, tuple[tuple[str, ...], str | None, bool]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.patterns)

    def covers(self, channel: str) -> bool:
        """Whether ``channel`` is under presence."""
        return any(matches(pattern, channel) for pattern in self.patterns)

    def enter(self, connection: Connection, member: str | None, *, watch: bool) -> None:
        """Count an opened stream on its presence channels; announce a member's first stream."""
        channels = tuple(c for c in connection.channels if self.covers(c))
        if not channels:
            return
        self._streams[connection] = (channels, member, watch)
        for name in channels:
            channel = self._channels.setdefault(name, _Channel())
            channel.connections += 1
            if watch:
                channel.watchers.add(connection)
            if member is not None:
                count = channel.members.get(member, 0)
                channel.members[member] = count + 1
                if count == 0 and self.store is None:
                    self._announce(name, channel, member, "join")
            if self.store is not None:
                count = channel.members.get(member, 0) if member is not None else 0
                self.store.write(name, channel.connections, member, count, "join" if count == 1 else "")

    def leave(self, connection: Connection) -> None:
        """Uncount an ended stream; announce a member's last. Safe to call more than once."""
        entry = self._streams.pop(connection, None)
        if entry is None:
            return
        channels, member, _ = entry
        for name in channels:
            channel = self._channels[name]
            channel.connections -= 1
            channel.watchers.discard(connection)
            count = 0
            if member is not None:
                count = channel.members[member] - 1
                if count:
                    channel.members[member] = count
                else:
                    del channel.members[member]
                    if self.store is None:
                        self._announce(name, channel, member, "leave")
            if channel.connections == 0:
                del self._channels[name]
            if self.store is not None:
                self.store.write(name, channel.connections, member, count, "leave" if member and not count else "")

    def _receive(self, name: str, member: str, action: str) -> None:
        """A cluster-wide join or leave, from Redis: to this process's watchers of ``name``."""
        channel = self._channels.get(name)
        if channel is not None:
            self._announce(name, channel, member, action)

    def _counts(self) -> dict[str, Counts]:
        return {name: (channel.connections, channel.members) for name, channel in self._channels.items()}

    def snapshot(self, name: str) -> dict[str, Any]:
        """The answer of ``GET BASE/presence?channel=``: counts, and members up to the bound.

        A channel under no presence pattern is refused (404): an empty answer would read as
        "nobody here" when nobody is counted."""
        if not self.covers(name):
            raise Refusal("Not found", f"{name!r} is not a presence channel (IMPULSE_PRESENCE_CHANNELS)", status=404)
        if self.store is None:
            channel = self._channels.get(name) or _Channel()
            connections, counted = channel.connections, channel.members
        else:
            connections, counted = self.store.read(name)
        members = sorted(counted.items())
        listed = [{"id": member, "connections": count} for member, count in members[: self.max_members]]
        answer: dict[str, Any] = {
            "channel": name,
            "connections": connections,
            "memberCount": len(members),
            "members": listed,
        }
        if len(members) > self.max_members:
            answer["truncated"] = True
        return answer

    @staticmethod
    def _announce(name: str, channel: _Channel, member: str, action: str) -> None:
        if not channel.watchers:
            return
        data = _json.dumps({"channel": name, "member": member, "action": action})
        message = Message(_EVENT_KEY, name, None, None, encode_event(data, event="presence"), time.time())
        for watcher in tuple(channel.watchers):
            watcher.offer(message)
