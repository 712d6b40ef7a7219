"""The readiness check: proof that the broker delivers, not only that the process answers.

``/health`` says the process is up and costs nothing. Readiness goes the whole way a push
goes: it opens a real connection on a private channel, publishes to that channel through
the backplane (ids, history, and Redis when configured), and waits for its own message to
arrive in the connection's queue.
"""

from __future__ import annotations

import time

from .broker import Broker
from .errors import PushError, TooManyConnections

#: The probe's channel. The control character keeps it private: no subscriber or publisher
#: can name it, since channel names with control characters are refused.
READY_CHANNEL = "\x00impulse:ready"
#: How long the probe waits for its message.
READY_TIMEOUT = 2.0


def check_delivery(broker: Broker, timeout: float = READY_TIMEOUT) -> str | None:
    """Push to ``READY_CHANNEL`` and receive the push; None when it came back, else why not."""
    try:
        connection = broker.open((READY_CHANNEL,), None, None)
    except TooManyConnections as exc:  # at its connection limit, or draining: not ready for more
        return exc.details or exc.error
    try:
        published = broker.publish(broker.draft(READY_CHANNEL, {"probe": "ready"}, None, None))
        # Read as a stream's writer reads: each write is what one wake-up of it would send,
        # and a silent one is a heartbeat after ``timeout``. The loop ends with the stream.
        frame = b"id: %s\n" % published.id.encode()
        deadline = time.monotonic() + timeout
        writes = connection.frames(b"", [], heartbeat_interval=timeout)
        try:
            for write in writes:
                if frame in write:
                    return None
                if time.monotonic() >= deadline:
                    break
        finally:
            writes.close()
        return f"a push to the broker did not come back within {timeout:g} s"
    except PushError as exc:  # the backplane refused the push
        return exc.details or exc.error
    finally:
        broker.release(connection)
