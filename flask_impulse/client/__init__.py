"""The clients of the service, for Python code that is not the Flask app:

- ``push``: ``ServerClient``, which pushes over HTTP with retries under idempotency keys;
- ``subscriber``: ``RealtimeClient``, which subscribes, and the ``EventStream`` it hands out;
- ``groups``: the streams behind a ``RealtimeClient`` (subscriptions sharing a token and a
  topic share one stream), its supervisor and reader threads.

May import ``channels``, ``errors``, ``sse``, ``validation``, ``_json``, ``requests`` and the
standard library; never Flask, gevent, the extension or the server: a script or a serverless
function imports these with ``requests`` alone.
"""

from .groups import SWITCH_GRACE, ConnectionState, Handler, PresenceEvent, PresenceHandler
from .push import RETRIED_STATUSES, PushResult, ServerClient
from .subscriber import EventStream, RealtimeClient

__all__ = [
    "RETRIED_STATUSES",
    "SWITCH_GRACE",
    "ConnectionState",
    "EventStream",
    "Handler",
    "PresenceEvent",
    "PresenceHandler",
    "PushResult",
    "RealtimeClient",
    "ServerClient",
]
