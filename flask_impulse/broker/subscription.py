"""What a subscriber asked for, and the one rule that says whether a message is for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from .message import Framed

S = TypeVar("S", bound="Subscription")


class Subscription:
    """A stream's channels, topic and audience key (the keyed hash of its token).

    Channels route: the broker hands a message only to the connections on its channel, and a
    resume reads only the subscribed channels' history. :meth:`matches` is the rest of the
    rule, applied to every routed message, live (the fan-out) or replayed (a resume).
    """

    __slots__ = ("audience_key", "channels", "topic")

    def __init__(self, channels: tuple[str, ...], topic: str | None, audience_key: bytes | None) -> None:
        self.channels = channels
        self.topic = topic
        self.audience_key = audience_key

    @staticmethod
    def select(subscriptions: Sequence[S], message: Framed) -> Sequence[S]:
        """The subscriptions among ``subscriptions`` (on the message's channel) that ``message``
        is for: a message with a topic reaches that topic's streams only, one with an audience
        its tokens' streams only.

        The fan-out runs this once per message for all of a channel's connections: the test is
        chosen once, then costs an attribute and a comparison per connection, not a call.
        """
        topic, audience = message.topic, message.audience
        if topic is None and audience is None:
            return subscriptions
        if audience is None:
            return [s for s in subscriptions if s.topic == topic]
        if topic is None:
            return [s for s in subscriptions if s.audience_key in audience]
        return [s for s in subscriptions if s.topic == topic and s.audience_key in audience]

    def matches(self, message: Framed) -> bool:
        """Whether ``message``, on one of the channels, is for this subscriber (a replay's filter)."""
        return bool(self.select((self,), message))
