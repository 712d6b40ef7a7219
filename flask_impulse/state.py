"""The state one app's extension holds, apart from the extension, so that the views (and the
standalone service) read it without importing ``extension``, which builds the views.

Imports nothing at run time: the annotations name the pieces ``extension`` assembles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .broker import Broker
    from .channels import Channel
    from .config import Settings
    from .console import Console
    from .presence import Presence
    from .security.access import Gatekeeper
    from .security.ratelimit import PushRateLimiter

#: The key of the state in ``app.extensions``.
EXTENSION_KEY = "impulse"


@dataclass
class ImpulseState:
    """What one app's extension holds, in ``app.extensions["impulse"]``."""

    settings: Settings
    broker: Broker
    cors_options: Any = field(repr=False)
    gatekeeper: Gatekeeper = field(repr=False)
    presence: Presence = field(repr=False)
    #: The declared channels of the extension (shared with it), by name.
    channels: Mapping[str, Channel[Any]] = field(default_factory=dict)
    push_rate_limiter: PushRateLimiter | None = None
    #: The operator console (``IMPULSE_CONSOLE_TOKEN``); None when it is off.
    console: Console | None = None
