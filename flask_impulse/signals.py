"""Signals, in a private namespace as Flask keeps its own (``flask.signals``).

``pushed``: sent after each in-process push (``Impulse.push`` / ``Impulse.publish``) is
published, with the Flask app as sender (``None`` outside an app context) and ``push``, a
:class:`PushRecord`. It is how ``flask_impulse.testing``'s ``impulse_pushes`` fixture sees the
pushes of an app under test without a server; connect to it for audit logs or metrics too.
A receiver runs in the pushing request: keep it quick, and let it not raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blinker import Namespace

_signals = Namespace()

#: Sent after each in-process push, with ``push=PushRecord(...)``.
pushed = _signals.signal("pushed")


@dataclass(frozen=True)
class PushRecord:
    """One push as the app made it, and what the broker answered."""

    channel: str
    payload: Any
    #: The audience tokens as given (``None``: every subscriber), in order.
    tokens: tuple[str, ...] | None
    topic: str | None
    #: The message id, the ``id:`` of the event subscribers receive.
    id: str
    #: Connections of this process the message was written to.
    sent: int
    idempotency_key: str | None = None
    #: True when ``idempotency_key`` was seen within its TTL, so nothing was delivered.
    duplicate: bool = False
