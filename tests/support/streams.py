"""Reading SSE streams in tests: every read has a deadline, so a broken server fails a test
instead of hanging it."""

from __future__ import annotations

import json
import selectors
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask_impulse.sse import ServerSentEvent, SSEDecoder


class StreamTimeout(AssertionError):
    pass


class ChunkedDecoder:
    """The body of a chunked HTTP response, chunk by chunk, in linear time: the one decoder of
    every test helper (a chunk not followed by CRLF fails the test: the server framed it wrong)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        buffer, position, body = self._buffer, 0, []
        while not self.finished:
            line_end = buffer.find(b"\r\n", position)
            if line_end == -1:
                break
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
            if size == 0:
                self.finished = True
                break
            if len(buffer) < line_end + 2 + size + 2:
                break
            assert buffer[line_end + 2 + size : line_end + 4 + size] == b"\r\n", "chunk not followed by CRLF"
            body.append(bytes(buffer[line_end + 2 : line_end + 2 + size]))
            position = line_end + 2 + size + 2
        del buffer[:position]
        return b"".join(body)


def raw_exchange(port: int, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to 127.0.0.1:``port``; the answer's status, headers and body (read to its
    length). Every read has the deadline."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data:
            assert time.monotonic() < deadline, "no answer head"
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            assert time.monotonic() < deadline, "answer body cut short"
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split()[1]), headers, body


class SSEStream:
    """One stream over a raw socket: exact control of reads, timeouts and disconnects."""

    def __init__(
        self,
        base_url: str,
        params: dict[str, Any] | list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
        source_address: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        path = parts.path or "/"
        query = urlencode(params or {}, doseq=True)
        # A loopback source other than 127.0.0.1 makes this client a different address.
        source = (source_address, 0) if source_address else None
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout, source_address=source)
        target = f"{path}?{query}" if query else path
        request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n"
        for name, value in (headers or {}).items():
            request += f"{name}: {value}\r\n"
        # A lone surrogate ("\udcb2") goes out as the raw byte it stands for, as a forged header would.
        self.sock.sendall((request + "\r\n").encode("utf-8", "surrogateescape"))
        self.decoder = SSEDecoder(keep_comments=True)
        self._pending: list[ServerSentEvent] = []
        self._body = b""
        self.status, self.headers = self._read_head(timeout)
        self._chunks = ChunkedDecoder() if self.headers.get("transfer-encoding", "").lower() == "chunked" else None
        self.closed = False

    def _read_head(self, timeout: float) -> tuple[int, dict[str, str]]:
        buffer = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buffer:
            buffer += self._recv(deadline)
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._leftover = rest
        return status, headers

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StreamTimeout("no data from the stream before the deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise StreamTimeout("no data from the stream before the deadline") from None
        if not data:
            self.closed = True
            raise ConnectionError("stream closed by the server")
        return data

    def _decode_body(self, data: bytes) -> bytes:
        if self._chunks is None:
            return data
        body = self._chunks.feed(data)
        self.closed = self.closed or self._chunks.finished
        return body

    def read_json(self, timeout: float = 10) -> Any:
        """The JSON body of an answer that is not a stream (sized by Content-Length)."""
        length = int(self.headers["content-length"])
        deadline = time.monotonic() + timeout
        body, self._leftover = self._leftover, b""
        while len(body) < length:
            body += self._recv(deadline)
        return json.loads(body[:length])

    def read_body(self, timeout: float = 10) -> bytes:
        """Raw body bytes until the server ends the response (or the deadline)."""
        deadline = time.monotonic() + timeout
        body = self._decode_body(self._leftover)
        self._leftover = b""
        while not self.closed:
            try:
                body += self._decode_body(self._recv(deadline))
            except ConnectionError:
                break
        return body

    def next_event(self, timeout: float = 10) -> ServerSentEvent:
        deadline = time.monotonic() + timeout
        if self._leftover:
            self._pending.extend(self.decoder.feed(self._decode_body(self._leftover)))
            self._leftover = b""
        while not self._pending:
            if self.closed:
                raise ConnectionError("stream closed by the server")
            self._pending.extend(self.decoder.feed(self._decode_body(self._recv(deadline))))
        return self._pending.pop(0)

    def events(self, count: int, timeout: float = 10) -> list[ServerSentEvent]:
        deadline = time.monotonic() + timeout
        return [self.next_event(max(deadline - time.monotonic(), 0.001)) for _ in range(count)]

    def messages(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The decoded JSON of the next ``count`` unnamed events."""
        return [json.loads(event.data) for event in self.events(count, timeout)]

    def assert_silent(self, seconds: float) -> None:
        """Nothing but comments arrives for ``seconds``."""
        try:
            event = self.next_event(seconds)
        except StreamTimeout:
            return
        raise AssertionError(f"unexpected event {event!r}")

    def wait_closed(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            try:
                self._pending.extend(self.decoder.feed(self._decode_body(self._recv(deadline))))
            except ConnectionError:
                return

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.closed = True

    def __enter__(self) -> SSEStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ManyStreams:
    """Hundreds or thousands of streams read by one selector loop, to count deliveries."""

    def __init__(self, base_url: str, count: int, params: dict[str, str], timeout: float = 30) -> None:
        parts = urlsplit(base_url)
        path = (parts.path or "/") + "?" + urlencode(params)
        request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode()
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.buffers: dict[int, bytes] = {}
        self.connected = 0
        for _ in range(count):
            sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
            sock.sendall(request)
            sock.setblocking(False)
            self.socks.append(sock)
            self.buffers[sock.fileno()] = b""
            self.selector.register(sock, selectors.EVENT_READ)

    def read_until(self, predicate: Any, timeout: float) -> None:
        """Read from every stream until ``predicate(buffers)`` holds, or fail at the deadline."""
        deadline = time.monotonic() + timeout
        while not predicate(self.buffers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeout("streams did not receive what was expected before the deadline")
            for key, _ in self.selector.select(min(remaining, 0.5)):
                try:
                    data = key.fileobj.recv(262144)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if data:
                    self.buffers[key.fd] += data

    def count_in_each(self, needle: bytes) -> list[int]:
        return [buffer.count(needle) for buffer in self.buffers.values()]

    def close(self) -> None:
        for sock in self.socks:
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()

    def __enter__(self) -> ManyStreams:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def unique(prefix: str) -> str:
    """A channel name no other test uses: tests share servers, and a channel of their own
    keeps one test's messages out of another's streams."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
