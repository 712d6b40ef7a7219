"""flask-impulse: type-safe realtime updates over Server-Sent Events for Flask, wire-compatible
with Impulse Realtime."""

from typing import TYPE_CHECKING, Any

from .channels import Channel, Event, Push
from .errors import (
    AccessDenied,
    BackplaneUnavailable,
    ConfigurationError,
    ImpulseError,
    InvalidPayload,
    MissedMessages,
    OutcomeUnknown,
    PushDenied,
    PushError,
    RealtimeClientError,
    Refusal,
    ServerClientError,
    SubscriptionDenied,
    SubscriptionRefused,
    TokenRejected,
    TooManyConnections,
    TooManyStreams,
    TypeScriptError,
)
from .security.tokens import issue_token

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .client import EventStream, PresenceEvent, PushResult, RealtimeClient, ServerClient
    from .extension import Impulse
    from .security.access import PublishRequest, SubscribeRequest


def __getattr__(name: str) -> Any:
    # The clients import requests, and with it ssl; loading them lazily keeps ssl out of a
    # gunicorn master, so gevent can patch it cleanly in the workers. The extension imports
    # Flask and gevent, which a script or serverless function that only pushes or subscribes
    # does not need: ``from flask_impulse import ServerClient, Channel`` loads neither.
    if name in ("EventStream", "PresenceEvent", "PushResult", "RealtimeClient", "ServerClient"):
        from . import client

        return getattr(client, name)
    if name == "Impulse":
        from .extension import Impulse

        return Impulse
    if name in ("PublishRequest", "SubscribeRequest"):
        from .security import access

        return getattr(access, name)
    raise AttributeError(f"module 'flask_impulse' has no attribute {name!r}")


__all__ = [
    "AccessDenied",
    "BackplaneUnavailable",
    "Channel",
    "ConfigurationError",
    "Event",
    "EventStream",
    "Impulse",
    "ImpulseError",
    "InvalidPayload",
    "MissedMessages",
    "OutcomeUnknown",
    "PresenceEvent",
    "PublishRequest",
    "Push",
    "PushDenied",
    "PushError",
    "PushResult",
    "RealtimeClient",
    "RealtimeClientError",
    "Refusal",
    "ServerClient",
    "ServerClientError",
    "SubscribeRequest",
    "SubscriptionDenied",
    "SubscriptionRefused",
    "TokenRejected",
    "TooManyConnections",
    "TooManyStreams",
    "TypeScriptError",
    "__version__",
    "issue_token",
]
