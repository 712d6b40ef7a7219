"""Many SSE streams that reconnect with Last-Event-ID when their connection ends, as EventSource
does, all read by one selector loop: what the scale-out tests need to follow clients through a
dying replica without a thread per stream."""

from __future__ import annotations

import json
import random
import re
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask_impulse.sse import SSEDecoder

from .streams import ChunkedDecoder, StreamTimeout


class _Sized:
    """A body of known length (``Content-Length``): a draining worker's empty stream, which
    ends, as EventSource sees it, when its last byte arrives, whatever the connection does."""

    def __init__(self, length: int) -> None:
        self._left = length
        self.finished = length == 0

    def feed(self, data: bytes) -> bytes:
        data = data[: self._left]
        self._left -= len(data)
        self.finished = self._left == 0
        return data


class _Stream:
    def __init__(self, index: int) -> None:
        self.index = index
        self.sock: socket.socket | None = None
        self.head = b""
        self.status: int | None = None
        self.body: ChunkedDecoder | _Sized | None = None
        self.decoder = SSEDecoder(keep_comments=True)
        self.last_event_id = ""
        self.payloads: list[Any] = []
        #: How many payloads had arrived when each ``event: gap`` did: where the signal fell.
        self.gaps: list[int] = []
        self.connects = 0
        self.reconnect_at: float | None = 0.0


class ResumingStreams:
    """``count`` streams on ``base_url``; each message's ``payload`` is kept, per stream, in order,
    and where each ``event: gap`` fell among them.

    A stream whose response ends (its last chunk or its Content-Length, EOF, reset, or a non-200
    answer such as a proxy's 502) reconnects after ``retry`` seconds (with jitter) and sends the
    id of the last event it received as ``Last-Event-ID``.
    """

    def __init__(self, base_url: str, count: int, params: dict[str, str], retry: float = 0.2) -> None:
        parts = urlsplit(base_url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._target = (parts.path or "/") + "?" + urlencode(params)
        self._host = parts.netloc
        self._retry = retry
        self.selector = selectors.DefaultSelector()
        self.streams = [_Stream(index) for index in range(count)]

    # -- connections ---------------------------------------------------------------------
    def _connect(self, stream: _Stream) -> None:
        request = f"GET {self._target} HTTP/1.1\r\nHost: {self._host}\r\nAccept: text/event-stream\r\n"
        if stream.last_event_id:
            request += f"Last-Event-ID: {stream.last_event_id}\r\n"
        stream.reconnect_at = None
        stream.head, stream.status, stream.body = b"", None, None
        stream.decoder = SSEDecoder(keep_comments=True)
        stream.connects += 1
        try:
            sock = socket.create_connection(self._address, timeout=5)
            sock.sendall((request + "\r\n").encode())
        except OSError:
            self._schedule(stream)
            return
        sock.setblocking(False)
        stream.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, stream)

    def _schedule(self, stream: _Stream) -> None:
        if stream.sock is not None:
            self.selector.unregister(stream.sock)
            stream.sock.close()
            stream.sock = None
        stream.reconnect_at = time.monotonic() + self._retry * random.uniform(1, 2)

    def connect_all(self, timeout: float = 30) -> None:
        """Open every stream, and wait until each has its 200 and first bytes."""
        for stream in self.streams:
            self._connect(stream)
        self.run_until(lambda: all(s.status == 200 and s.body is not None for s in self.streams), timeout)

    # -- reading ---------------------------------------------------------------------------
    def _read(self, stream: _Stream) -> None:
        assert stream.sock is not None
        try:
            data = stream.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._schedule(stream)
            return
        if stream.status is None:
            stream.head += data
            if b"\r\n\r\n" not in stream.head:
                return
            head, _, data = stream.head.partition(b"\r\n\r\n")
            stream.status = int(head.split(b" ", 2)[1])
            if stream.status != 200:
                self._schedule(stream)
                return
            length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
            stream.body = _Sized(int(length[1])) if length else ChunkedDecoder()
        assert stream.body is not None
        for event in stream.decoder.feed(stream.body.feed(data)):
            if event.event == "message":
                stream.payloads.append(json.loads(event.data)["payload"])
            elif event.event == "gap":
                stream.gaps.append(len(stream.payloads))
        stream.last_event_id = stream.decoder.last_event_id or stream.last_event_id
        if stream.body.finished:
            self._schedule(stream)

    def run_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Read, and reconnect what ends, until ``done()`` or the deadline (then fail)."""
        deadline = time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            if now > deadline:
                raise StreamTimeout("the streams did not get what was expected before the deadline")
            for stream in self.streams:
                if stream.reconnect_at is not None and stream.reconnect_at <= now:
                    self._connect(stream)
            for key, _ in self.selector.select(0.05):
                self._read(key.data)

    def payloads(self) -> list[list[Any]]:
        return [stream.payloads for stream in self.streams]

    def close(self) -> None:
        for stream in self.streams:
            if stream.sock is not None:
                self.selector.unregister(stream.sock)
                stream.sock.close()
                stream.sock = None
        self.selector.close()

    def __enter__(self) -> ResumingStreams:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
