"""The client's socket, below the stream: whether the event loop may write to it directly,
its TCP options, and noticing at once that the client hung up."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable

import gevent

_direct_writes = False


def allow_direct_writes(allowed: bool) -> None:
    """Let the event loop write to clients' sockets itself (see :meth:`Connection.write_directly`).

    Only the server knows how it frames a response body; our gunicorn config turns this on
    in each worker where gunicorn serves plain HTTP/1.x, whose framing is known.
    """
    global _direct_writes
    _direct_writes = allowed


def direct_writes_allowed() -> bool:
    return _direct_writes


class StalledWrite(ConnectionResetError):
    """Raised into a stream's greenlet whose client stopped reading: gunicorn treats it as a
    reset connection, closes the socket quietly, and our generator's ``finally`` cleans up."""

    def __init__(self, reason: str = "write stalled past the heartbeat interval") -> None:
        super().__init__(errno.ECONNRESET, reason)


def abort_when_unacknowledged(client: socket.socket, seconds: float) -> None:
    """Have the kernel abort the connection when data sent to ``client`` stays unacknowledged
    for ``seconds`` (TCP_USER_TIMEOUT, Linux).

    A half-open connection (the client's machine or network vanished without a FIN or RST)
    takes writes into its send buffer for a long while: a heartbeat write succeeds, and TCP
    would retransmit it for about 15 minutes before giving up. With this limit, the first
    heartbeat the client does not acknowledge aborts the connection ``seconds`` later; the
    hang-up watcher sees the socket error and closes the stream.
    """
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:
        return
    # A socket that takes no TCP options (a unix socket's EOPNOTSUPP) keeps the heartbeat's
    # stall timeout alone. Not asked for its family first: that is an enum built per stream.
    with contextlib.suppress(OSError):
        client.setsockopt(socket.IPPROTO_TCP, option, max(int(seconds * 1000), 1))


class HangupWatcher:
    """Calls ``on_hangup`` as soon as the client hangs up, not at the next write.

    An EventSource never sends anything after its request, so the socket turns readable
    only when the client closes it (or sends garbage). A libev watcher costs no greenlet;
    its callback peeks without blocking, in the hub. A class with slots, not closures:
    every idle stream holds one (about 400 bytes less than a closure and its cells).
    """

    __slots__ = ("_on_hangup", "_raw", "_watcher")

    def __init__(self, client: socket.socket, on_hangup: Callable[[], None]) -> None:
        self._raw = getattr(client, "_sock", client)  # gevent's socket wraps the real one
        self._on_hangup = on_hangup
        # gevent's socket has a read watcher of its own, idle while nobody reads: borrowed, it
        # costs no watcher and no system call per stream. A read while it is borrowed would
        # fail loudly (ConcurrentObjectUseError); the stream gives it back when it ends.
        watcher = getattr(client, "_read_event", None)
        if watcher is None or watcher.active or watcher.callback is not None:
            watcher = gevent.get_hub().loop.io(client.fileno(), 1)
        self._watcher = watcher
        watcher.start(self._readable)

    def _readable(self) -> None:
        try:
            data = self._raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._watcher.stop()
        if not data:
            self._on_hangup()

    def stop(self) -> None:
        self._watcher.stop()
