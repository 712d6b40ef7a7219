"""A lean HTTP/1.1 loop for the plain requests of a keep-alive connection.

gunicorn serves each request through a parser, an unreader, a request object with its body
reader, an environ built from a dozen configuration look-ups, and a response object: about
half of what a push cost once Flask's request cycle was gone (300 of 600 µs), and a good
part of what an idle stream holds. This loop serves the requests a broker lives on itself,
when they are plain: ``GET`` or ``POST``, HTTP/1.1, an origin-form target, headers of
visible ASCII within gunicorn's limits, no ``Transfer-Encoding``, ``Expect``, ``Upgrade`` or
``Forwarded``, at most one ``Content-Length``; the scheme headers of a trusted proxy
(``X-Forwarded-Proto``...) are read by gunicorn's rule.

The first request that is anything else is handed, with every byte read so far, to
gunicorn's own handling for the rest of the connection, which answers it exactly as it
always did: its limits, its errors, its logs. So this loop never answers an error of HTTP
itself, and what it serves is what gunicorn would have served: the same environ keys,
``Server``, ``Date`` and ``Connection`` headers, chunked framing, keep-alive rules,
``max_requests`` count and request hooks (``pre_request``, ``post_request``, the drain's
``must_close``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import gevent
from gunicorn import SERVER, SERVER_SOFTWARE
from gunicorn.http.errors import NoMoreData
from gunicorn.http.message import RFC9110_5_3_SINGLETON_FIELDS, _ip_in_allow_list
from gunicorn.http.wsgi import FileWrapper, WSGIErrorsWrapper
from gunicorn.util import http_date

from .hotpath import HotPath

_METHODS = (b"GET", b"POST")
_TARGET = re.compile(rb"/[!$&'()*+,\-./0-9:;=?@A-Z_a-z~%]*")
#: Header lines: a token without "_" (which gunicorn drops), a colon, visible ASCII.
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+\-.^`|~0-9A-Za-z]+:[\x20-\x7e\t]*\r\n)*")
#: Headers whose meaning gunicorn interprets (framing, protocol switches, forwarding).
_HANDED_OVER = frozenset({"TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS", "FORWARDED", "TE"})
_READ_SIZE = 65536
#: Header blocks remembered per listener (see ``_Headers``), all forgotten when full, and
#: the longest remembered: at most a megabyte, however many distinct heads arrive.
_KNOWN_BLOCKS = 512
_KNOWN_BLOCK_SIZE = 2048


class Handover(Exception):
    """This request is not plain: gunicorn serves it, and the rest of its connection."""

    def __init__(self, buffered: bytes) -> None:
        self.buffered = buffered


class LeanRequest:
    """What gunicorn's request hooks and the drain read of a request."""

    __slots__ = ("headers", "method", "must_close", "path", "query", "uri", "version")

    def __init__(self, method: str, uri: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.uri = uri
        self.path, _, self.query = uri.partition("?")
        self.version = (1, 1)
        self.headers = headers
        self.must_close = False


class Body:
    """``wsgi.input``: exactly ``Content-Length`` bytes, from what was read with the head and
    then from the socket; a client that closes early is gunicorn's ``NoMoreData``."""

    __slots__ = ("_buffered", "_left", "_recv")

    def __init__(self, buffered: bytes, length: int, recv: Callable[[int], bytes]) -> None:
        self._buffered = buffered
        self._left = length
        self._recv = recv

    def read(self, size: int | None = -1) -> bytes:
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        parts: list[bytes] = []
        while wanted > 0:
            if self._buffered:
                part, self._buffered = self._buffered[:wanted], self._buffered[wanted:]
            else:
                part = self._recv(min(wanted, _READ_SIZE))
                if not part:
                    raise NoMoreData(b"".join(parts))
            parts.append(part)
            wanted -= len(part)
            self._left -= len(part)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        line = b""
        while not line.endswith(b"\n") and self._left and (size is None or size < 0 or len(line) < size):
            if not self._buffered:
                self._buffered = self._recv(min(self._left, _READ_SIZE))
                if not self._buffered:
                    raise NoMoreData(line)
            end = self._buffered.find(b"\n") + 1 or len(self._buffered)
            if size is not None and size >= 0:
                end = min(end, size - len(line))
            line += self.read(end)
        return line

    def discard(self) -> bool:
        """Read what the app left of the body, so that the next request starts where it
        should; whether the body was whole (the client may have gone in the middle of it)."""
        try:
            while self._left:
                self.read(min(self._left, _READ_SIZE))
        except NoMoreData:
            return False
        return True

    def leftover(self) -> bytes:
        """The bytes read past this body: the start of the next request."""
        return self._buffered


class Date:
    """gunicorn's ``Date`` header value, formatted once a second rather than per answer."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, http_date(now)
        return self._value


class _Headers:
    """A block of header lines, read: what it adds to the environ, the request's headers, and
    the body's length. Publishers send the same block push after push (same host, same
    credentials, same content type and often the same length): read once, it is looked up
    (15% of a push's CPU was this reading). A block with a scheme header is not kept: whether
    it counts depends on the peer. Nor is a block that is handed over: it raises each time."""

    __slots__ = ("cacheable", "environ", "headers", "length")

    def __init__(
        self, headers: tuple[tuple[str, str], ...], environ: dict[str, Any], length: int, *, cacheable: bool
    ) -> None:
        self.headers = headers
        self.environ = environ
        self.length = length
        self.cacheable = cacheable


class LeanLoop:
    """Serves a connection's plain requests; see the module's docstring."""

    def __init__(self, worker: Any, listener_name: Any) -> None:
        cfg = worker.cfg
        self.worker = worker
        self.cfg = cfg
        self.max_line = cfg.limit_request_line or 8190
        self.max_fields = cfg.limit_request_fields
        self.max_field = cfg.limit_request_field_size or 8190
        # Read once: each read of a gunicorn setting is a look-up through Config.__getattr__.
        self.keepalive = cfg.keepalive
        self.pre_request = cfg.pre_request
        self.post_request = cfg.post_request
        # Past this much without a whole head, gunicorn reads the rest under its own limits:
        # a connection never buffers more here than a request line and a header line.
        self.max_head = self.max_line + self.max_field + 4
        # Scheme headers count only from a trusted proxy (forwarded_allow_ips), as in gunicorn.
        self.scheme_headers = {name.upper(): value for name, value in cfg.secure_scheme_headers.items()}
        self._trusted: dict[str, bool] = {}
        self._blocks: dict[bytes, _Headers] = {}
        server = listener_name if isinstance(listener_name, tuple) else ("", "")
        self.base_environ = {
            "wsgi.errors": WSGIErrorsWrapper(cfg),
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": cfg.workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "SCRIPT_NAME": "",
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
        }
        self.date = Date()

    def serve(self, client: Any, addr: Any) -> None:
        """Serve until the connection ends; raises :class:`Handover` for a request that is not plain."""
        buffered = b""
        recv = client.recv
        worker = self.worker
        # The keep-alive timer, kept from one request to the next; a stream lets go of it
        # (_respond), since it would hold it for nothing.
        timers: list[gevent.Timeout] = []
        while True:
            head_end = buffered.find(b"\r\n\r\n")
            if head_end < 0:
                idle = timers.pop() if timers else gevent.Timeout(self.keepalive, False)
                idle.start()
                try:
                    while head_end < 0:
                        if len(buffered) > self.max_head:
                            raise Handover(buffered)
                        chunk = recv(_READ_SIZE)
                        if not chunk:
                            if buffered:
                                raise Handover(buffered)  # a head cut short: gunicorn's to tell
                            return
                        buffered += chunk
                        head_end = buffered.find(b"\r\n\r\n")
                    chunk = b""  # in buffered now: a stream's greenlet would keep it
                except gevent.Timeout as expired:
                    if expired is not idle:
                        raise
                    return  # idle past the keep-alive timeout, as gunicorn leaves it
                finally:
                    idle.cancel()
                    timers.append(idle)
                    del idle
            request, environ, length = self._parse(buffered, head_end, addr)
            body = Body(buffered[head_end + 4 :], length, recv)
            buffered = b""
            environ["wsgi.input"] = body
            environ["gunicorn.socket"] = client
            held = [environ]
            del environ  # handed on, not kept: a stream lets go of it (see _respond)
            if not self._respond(client, request, held, timers):
                return
            if not body.discard():  # as gunicorn does before the next request
                return
            buffered = body.leftover()
            if not worker.alive:
                return

    def _parse(self, buffered: bytes, head_end: int, addr: Any) -> tuple[LeanRequest, dict[str, Any], int]:
        line_end = buffered.find(b"\r\n")
        request_line = buffered[:line_end]
        parts = request_line.split(b" ")
        # Every header line with its CRLF, checked whole by one regular expression.
        block = buffered[line_end + 2 : head_end + 2]
        if (
            len(parts) != 3
            or parts[0] not in _METHODS
            or parts[2] != b"HTTP/1.1"
            or len(request_line) > self.max_line
            or not _TARGET.fullmatch(parts[1])
            or not _HEADER_LINES.fullmatch(block)
            or block.count(b"\n") > self.max_fields
            or (len(block) > self.max_field and any(len(line) > self.max_field for line in block.split(b"\r\n")))
        ):
            raise Handover(buffered)
        environ = dict(self.base_environ)
        known = self._blocks.get(block)
        if known is None:
            known = self._read_headers(block, buffered, addr, environ)
            if known.cacheable and len(block) <= _KNOWN_BLOCK_SIZE:
                if len(self._blocks) >= _KNOWN_BLOCKS:
                    self._blocks.clear()
                self._blocks[block] = known
        environ.update(known.environ)
        headers = list(known.headers)
        length = known.length
        method = parts[0].decode("latin-1")
        uri = parts[1].decode("latin-1")
        request = LeanRequest(method, uri, headers)
        environ["REQUEST_METHOD"] = method
        environ["RAW_URI"] = uri
        environ["QUERY_STRING"] = request.query
        path = request.path
        environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1") if "%" in path else path
        if isinstance(addr, tuple):
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
        if environ.get("HTTP_CONNECTION", "").lower() == "close":
            request.must_close = True
        return request, environ, length

    def _read_headers(self, block: bytes, buffered: bytes, addr: Any, base: dict[str, Any]) -> _Headers:
        """What a block of header lines puts in the environ and the request, or a
        :class:`Handover` for headers only gunicorn may judge."""
        environ: dict[str, Any] = {}
        headers: list[tuple[str, str]] = []
        seen: set[str] = set()
        length = 0
        scheme_from: str | None = None
        cacheable = True
        for line in block.decode("latin-1").split("\r\n")[:-1]:
            raw_name, _, raw_value = line.partition(":")
            name, value = raw_name.upper(), raw_value.strip(" \t")
            if name in _HANDED_OVER:
                raise Handover(buffered)
            if name in self.scheme_headers:
                cacheable = False  # whether it counts depends on the peer, not on the block
            if name in self.scheme_headers and self._trusts(addr):
                scheme = "https" if value == self.scheme_headers[name] else "http"
                if scheme_from is not None and scheme != environ.get("wsgi.url_scheme", base["wsgi.url_scheme"]):
                    raise Handover(buffered)  # contradicting scheme headers: gunicorn's 400
                scheme_from, environ["wsgi.url_scheme"] = name, scheme
            if name in RFC9110_5_3_SINGLETON_FIELDS:
                if name in seen:
                    raise Handover(buffered)
                seen.add(name)
            headers.append((name, value))
            if name == "CONTENT-LENGTH":
                if not value.isdigit() or len(value) > 18:
                    raise Handover(buffered)
                length = int(value)
                environ["CONTENT_LENGTH"] = value
            elif name == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
            elif name == "CONNECTION" and value.lower() not in ("keep-alive", "close"):
                raise Handover(buffered)
            else:
                key = "HTTP_" + name.replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return _Headers(tuple(headers), environ, length, cacheable=cacheable)

    def _trusts(self, addr: Any) -> bool:
        """Whether the peer may set the scheme, by gunicorn's own rule (remembered per address)."""
        if not isinstance(addr, tuple):
            return True  # a unix socket's peer is the proxy in front
        trusted = self._trusted.get(addr[0])
        if trusted is None:
            if len(self._trusted) >= 10_000:
                self._trusted.clear()
            cfg = self.cfg
            trusted = _ip_in_allow_list(addr[0], cfg.forwarded_allow_ips, cfg.forwarded_allow_networks())
            self._trusted[addr[0]] = trusted
        return trusted

    def _respond(
        self, client: Any, request: LeanRequest, held: list[dict[str, Any]], timers: list[gevent.Timeout]
    ) -> bool:
        """Serve one request; whether the connection stays open for the next.

        ``held`` holds the environ, the only reference to it outside the app. Once the app
        has answered with a stream, the environ and the request's headers are let go:
        an idle stream then keeps only what the app keeps (4 KiB less per stream, measured
        at 4,000 streams), and ``post_request`` sees an empty environ for it.
        """
        environ = held.pop()
        worker = self.worker
        self.pre_request(worker, request)
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False
        answer = Answer(client, request, self.date, close=not worker.alive)
        respiter: Iterable[bytes] | None = None
        try:
            respiter = worker.wsgi(environ, answer.start_response)
            if answer.length is None:
                environ, request.headers = {}, []
                timers.clear()
            for data in respiter:
                answer.write(data)
                del data  # written: a parked stream would keep its last frame
            answer.finish()
        except Exception as exc:
            if not answer.started:
                raise  # the worker answers it: a JSON 500, and the connection closed
            # Writing a 500 into a response begun would corrupt it: close instead, as gunicorn
            # does; a client gone mid-stream (a reset, a stalled write) is no error of ours.
            if not isinstance(exc, OSError):
                worker.log.exception("Error handling request")
            return False
        finally:
            if respiter is not None and hasattr(respiter, "close"):
                respiter.close()
            try:
                self.post_request(worker, request, environ, answer)
            except Exception:
                worker.log.exception("Exception in post_request hook")
        return not (answer.must_close or request.must_close)


class Answer:
    """One response: its head goes out with its first body bytes, chunked unless it has a
    ``Content-Length``, as gunicorn frames it."""

    __slots__ = ("_client", "_date", "_head", "chunked", "length", "must_close", "request", "sent", "started", "status")

    def __init__(self, client: Any, request: LeanRequest, date: Date, *, close: bool) -> None:
        self._client = client
        self._date = date
        self._head = b""
        self.request = request
        self.must_close = close or request.must_close
        self.status = ""
        self.chunked = False
        self.length: int | None = None
        self.sent = 0
        self.started = False  # whether any byte of it went out

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if self._head and exc_info is None:
            raise AssertionError("start_response called twice")
        self.status = status
        lines = []
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                self.length = int(value)
            elif lower in ("connection", "transfer-encoding", "keep-alive"):
                if lower == "connection" and value.lower() == "close":
                    self.must_close = True
                continue
            lines.append(f"{name}: {value}\r\n")
        self.chunked = self.length is None
        connection = "close" if self.must_close else "keep-alive"
        framing = "Transfer-Encoding: chunked\r\n" if self.chunked else ""
        self._head = (
            f"HTTP/1.1 {status}\r\nServer: {SERVER}\r\nDate: {self._date()}\r\nConnection: {connection}\r\n"
            f"{framing}{''.join(lines)}\r\n"
        ).encode("latin-1")
        return self.write

    def write(self, data: bytes) -> None:
        if self.length is not None:
            data = data[: max(0, self.length - self.sent)]
        elif not data:
            return  # an empty chunk would end the body
        self.sent += len(data)
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        head, self._head = self._head, b""
        self.started = True
        self._send(head + data)

    def finish(self) -> None:
        """The head if nothing was written, and the last chunk."""
        tail = b"0\r\n\r\n" if self.chunked else b""
        head, self._head = self._head, b""
        if head or tail:
            self.started = True
            self._send(head + tail)
        if self.length is not None and self.sent < self.length:
            self.must_close = True  # a body shorter than announced: the framing is lost

    def _send(self, data: bytes) -> None:
        """All of ``data``, in one ``send`` when the socket takes it (an answer is a few hundred
        bytes): gevent's ``sendall`` asks the kernel for the send buffer's size first, a second
        system call for every answer."""
        sent = self._client.send(data)
        if sent < len(data):
            self._client.sendall(memoryview(data)[sent:])


def eligible(worker: Any) -> bool:
    """Whether this loop may serve the worker's connections: those of the standalone service
    (an embedding app keeps gunicorn's handling whole), in plain HTTP/1 without TLS, HTTP/2,
    the PROXY protocol or an access log (which needs gunicorn's request objects)."""
    cfg = worker.cfg
    return bool(
        isinstance(getattr(worker.wsgi, "wsgi_app", None), HotPath)
        and not cfg.is_ssl
        and getattr(cfg, "protocol", "http") == "http"
        and "h2" not in (getattr(cfg, "http_protocols", None) or ["h1"])
        and cfg.proxy_protocol in (False, None, "off")  # gunicorn 27 names its modes; older ones had a bool
        and not cfg.accesslog
        and cfg.keepalive
        and not os.environ.get("SCRIPT_NAME")
    )
