"""The clients of the service, for Python code that is not the Flask app."""

from .subscriber import (
    RETRIED_STATUSES,
    SWITCH_GRACE,
    ConnectionState,
    EventStream,
    Handler,
    PushResult,
    RealtimeClient,
    ServerClient,
)

__all__ = [
    "RETRIED_STATUSES",
    "SWITCH_GRACE",
    "ConnectionState",
    "EventStream",
    "Handler",
    "PushResult",
    "RealtimeClient",
    "ServerClient",
]
