"""gunicorn's gevent worker, with JSON answers to requests that never reach the app, no
connection reset when it stops listening, and the head of an answer sent with its body.

gunicorn refuses malformed or oversized requests itself (request line over
``limit_request_line``, a header over ``limit_request_field_size``, too many headers, a bad
chunk...) with a small HTML page that quotes the offending bytes, and logs them at warning
level. Those bytes may be a token: this worker answers ``{"error": ...}`` with the same
status, quotes nothing, and logs only the kind of error.
"""

from __future__ import annotations

import errno
import functools
import ssl
from datetime import datetime
from typing import Any

import gevent
from gevent.server import StreamServer
from gunicorn import util
from gunicorn.http import errors, wsgi
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from .. import _json
from ..security.headers import add_security_headers
from ..security.redaction import redact

try:  # names of gunicorn 27's parser that the lean loop reuses
    from .http1 import Handover, LeanLoop, eligible
except ImportError:  # an older gunicorn: its own handling serves every request

    def eligible(worker: Any) -> bool:
        return False


# Statuses that are not 400, by gunicorn exception class name (names, so that classes a
# gunicorn version lacks cost nothing).
_STATUS = {
    "LimitRequestLine": (414, "URI Too Long"),
    "LimitRequestHeaders": (431, "Request Header Fields Too Large"),
    "UnsupportedTransferCoding": (501, "Not Implemented"),
    "ExpectationFailed": (417, "Expectation Failed"),
    "ForbiddenProxyRequest": (403, "Forbidden"),
    "ConfigurationProblem": (500, "Internal Server Error"),
    "InvalidResponseHeader": (500, "Internal Server Error"),
    "InvalidResponseHeaderName": (500, "Internal Server Error"),
}


def error_status(exc: BaseException) -> tuple[int, str]:
    """gunicorn's status for an error it meets before or around the app."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _STATUS:
            return _STATUS[cls.__name__]
    if isinstance(exc, errors.ParseException):
        return 400, "Bad Request"
    if isinstance(exc, ssl.SSLError):
        return 403, "Forbidden"
    return 500, "Internal Server Error"


class DrainingStreamServer(StreamServer):  # type: ignore[misc]
    """gevent's server, accepting every connection already queued on its listening socket
    before it closes it.

    When the last process holding a listening socket closes it (the last worker of an
    instance that is stopping: the arbiter closed its own copy first), Linux resets the
    connections in its queue, handshaken but never accepted. A proxy that had already sent a
    push on one answers 502, since it may not resend a POST. Accepting them first, with
    nothing that yields between the last accept and the close, leaves that window at
    microseconds; the worker then answers them like any request that arrives while it leaves
    (``Connection: close``).
    """

    def do_handle(self, *args: Any) -> None:
        """Start a connection's greenlet in the worker's ``handle`` itself.

        gevent starts it in a helper that calls ``handle(*args)``, and gunicorn's ``handle``
        is a ``functools.partial``: each call through C costs a frame of the C stack, which
        every idle stream's greenlet keeps saved while it is parked (about 450 bytes a stream).
        """
        handle = self._handle
        if self._spawn is None or not isinstance(handle, functools.partial) or len(handle.args) != 1:
            super().do_handle(*args)  # TLS (gevent wraps the socket first), or not gunicorn's handle
            return
        try:
            self._spawn(self._handle_then_close, handle.func, handle.args[0], *args)
        except BaseException:
            self.do_close(*args)
            raise

    def _handle_then_close(self, handle: Any, listener: Any, client: Any, address: Any) -> None:
        try:
            handle(listener, client, address)
        finally:
            self.do_close(client, address)

    def close(self) -> None:
        self.stop_accepting()
        while not self.full():
            try:
                accepted = self.do_read()
            except OSError:
                break
            if not accepted:
                break
            self.do_handle(*accepted)
        super().close()


class CoalescingResponse(Response):  # type: ignore[misc]
    """gunicorn's response, sending its head in the same ``send`` as the first body bytes.

    gunicorn sends the head, then each body write: two sends, and two TCP segments, for
    every push answered and every stream opened. A push is a few hundred bytes all told,
    and the second ``send`` was a tenth of its cost. Only the write that starts the body is
    changed: ``sendfile``, ``close`` and empty bodies send the head as gunicorn does.
    """

    _defer_head = False
    _head = b""
    headers_sent: bool

    def write(self, arg: bytes) -> None:
        self._defer_head = not self.headers_sent
        try:
            super().write(arg)
        finally:
            self._defer_head = False
            if self._head:  # nothing of the body went out (a no-body answer, say)
                head, self._head = self._head, b""
                util.write(self.sock, head)

    def send_headers(self) -> None:
        if not (self._defer_head and not self.headers_sent):
            super().send_headers()
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        self._head = f"{''.join(lines)}\r\n".encode("latin-1")
        self.headers_sent = True

    def _emit_body(self, data: bytes) -> None:
        if not self._head:
            super()._emit_body(data)
            return
        head, self._head = self._head, b""
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        util.write(self.sock, head + data)


class Replayed:
    """A client socket whose first reads return bytes already read from it: the request a
    lean loop handed over, for gunicorn's parser to read from its start."""

    def __init__(self, client: Any, buffered: bytes) -> None:
        self._client = client
        self._replay = buffered

    def recv(self, size: int, *flags: int) -> bytes:
        if self._replay:
            data, self._replay = self._replay[:size], self._replay[size:]
            return data
        return self._client.recv(size, *flags)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _KnownListener:
    """A listening socket's name, still known once the socket is closed.

    gunicorn asks the listener for its name when it starts on a connection, and a connection
    accepted just before the worker closed its listener starts after: the question then
    fails (EBADF) and the connection, its request unread, is reset, which a proxy answers
    with 502. The name is all gunicorn asks of it.
    """

    def __init__(self, name: Any) -> None:
        self._name = name

    def getsockname(self) -> Any:
        return self._name


class ImpulseGeventWorker(GeventWorker):  # type: ignore[misc]
    """The gevent worker, answering its own errors in JSON without echoing the request,
    serving what is queued on its listening socket before it closes it, and serving the
    standalone service's plain requests in a lean loop (``http1``)."""

    _lean = False

    def run(self) -> None:
        self._listeners = {id(listener): _KnownListener(listener.getsockname()) for listener in self.sockets}
        # GeventWorker.run() builds its servers, and wsgi.create() its responses, from these
        # module globals, and offer no other way to choose their classes for gunicorn's own
        # HTTP handling; only this worker process, which runs no other worker, sees the change.
        ggevent.StreamServer = DrainingStreamServer
        if hasattr(Response, "_emit_body"):  # gunicorn 27's one place where body bytes are framed
            wsgi.Response = CoalescingResponse
        self._lean = eligible(self)
        self._lean_loops: dict[int, LeanLoop] = {}
        super().run()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        listener = self._listeners.get(id(listener), listener)
        if not self._lean:
            super().handle(listener, client, addr)
            return
        loop = self._lean_loops.get(id(listener))
        if loop is None:
            loop = self._lean_loops[id(listener)] = LeanLoop(self, listener.getsockname())
        try:
            loop.serve(client, addr)
        except Handover as handover:
            # Not a plain request: gunicorn serves it, from its first byte, and what follows.
            super().handle(listener, Replayed(client, handover.buffered), addr)
            return
        except errors.NoMoreData as exc:
            self.log.debug("Ignored premature client disconnection. %s", exc)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except (gevent.GreenletExit, SystemExit):
            pass
        except BaseException as exc:
            self.handle_error(None, client, addr, exc)
        util.close(client)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        request_start = datetime.now()
        addr = addr or ("", -1)  # a unix socket has no address
        status, reason = error_status(exc)
        if status != 500:  # every other status, 501 for an unknown transfer coding included, is the client's doing
            self.log.warning("Invalid request from ip=%s: %s (%s)", addr[0], reason, type(exc).__name__)
            if req is None:
                req = getattr(exc, "req", None)  # a bad header: the request line is known, for the access log
        elif req is not None and hasattr(req, "uri"):
            self.log.exception("Error handling request %s %s", req.method, redact(req.uri))
        else:
            self.log.exception("Error handling request (no URI read)")
        answer = {"error": reason}
        if status in (414, 431):
            answer["details"] = self._details(status)
        body = _json.dumps(answer)
        if req is not None and hasattr(req, "headers"):
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            response = Response(req, client, self.cfg)
            response.status = f"{status} {reason}"
            response.response_length = len(body)
            self.log.access(response, req, environ, datetime.now() - request_start)
        headers = {"Connection": "close", "Content-Type": "application/json", "Content-Length": str(len(body))}
        if self._security_headers():
            add_security_headers(headers)
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head += "\r\n"
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:
            self.log.debug("Failed to send error message.")

    def _security_headers(self) -> bool:
        """Whether the app this worker serves wants the security headers (on by default)."""
        state = getattr(self.wsgi, "extensions", {}).get("impulse")
        return state is None or bool(state.settings.security_headers)

    def _details(self, status: int) -> str:
        cfg = self.cfg
        if status == 414:
            return f"the request line may hold at most {cfg.limit_request_line} bytes"
        return (
            f"a header may hold at most {cfg.limit_request_field_size} bytes, "
            f"and a request at most {cfg.limit_request_fields} headers"
        )
