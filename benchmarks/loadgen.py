"""The load generator: one Python process, one epoll loop, raw sockets, no threads.

It speaks the wire protocol as any client does (``GET /?channel=`` streams, ``POST /`` pushes
on keep-alive connections) and is the same code for both brokers. Its cost per received
chunk is one ``recv`` and one ``bytes.count`` (done in C), whatever number of messages the
chunk holds, so when the broker outruns it, chunks simply grow: it batches under load
instead of falling behind message by message. Received bytes are kept, with the time of
each ``recv`` when asked, so that each scenario checks afterwards, outside the timed
window, that every stream got every message exactly once, and when it got it.
"""

from __future__ import annotations

import errno
import json
import re
import resource
import select
import socket
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

#: What starts every message frame of both brokers ("data: {...}\n\n"); comments never hold it.
FRAME = b"data: "
_TAIL = len(FRAME) - 1
_RECV_SIZE = 65536  # below glibc's mmap threshold: a bigger buffer costs an mmap per recv
_SEQ_AND_TIME = re.compile(rb'"seq":(\d+),"t":([0-9.]+)')
_SEQ = re.compile(rb'"seq":(\d+)')
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


class LoadError(RuntimeError):
    """The run could not be carried out as planned (a stream refused, a deadline passed)."""


def cpu_seconds_self() -> float:
    """user+sys of this process: the generator's own cost."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stream:
    """One subscriber socket and everything it received."""

    __slots__ = ("chunks", "connected", "error", "fd", "frames", "head", "sock", "tail", "times")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.chunks: list[bytes] = []
        self.times: list[float] = []
        self.frames = 0
        self.tail = b""
        self.head = b""
        self.connected = False
        self.error: str | None = None

    def body(self) -> bytes:
        return b"".join(self.chunks)

    def seqs(self) -> list[int]:
        """The ``seq`` of every message received, in arrival order."""
        return [int(value) for value in _SEQ.findall(self.body())]

    def arrivals(self) -> list[tuple[int, float, float]]:
        """(seq, sent at, received at) for each message: a message's time is that of the
        ``recv`` that completed it."""
        body = self.body()
        ends = []
        total = 0
        for chunk in self.chunks:
            total += len(chunk)
            ends.append(total)
        times = self.times
        return [
            (int(match[1]), float(match[2]), times[bisect_right(ends, match.end() - 1)])
            for match in _SEQ_AND_TIME.finditer(body)
        ]


class Publisher:
    """One keep-alive HTTP/1.1 connection that POSTs one request at a time."""

    __slots__ = ("buffer", "fd", "in_flight", "sent_at", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buffer = b""
        self.in_flight = False
        self.sent_at = 0.0


@dataclass
class RunResult:
    """What one timed run saw, from the first push to the last expected frame."""

    pushes: int = 0
    started: float = 0.0
    pushes_done: float = 0.0
    frames_done: float = 0.0
    generator_cpu: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    sent_total: int = 0
    frames: int = 0
    frames_after_linger: int = 0
    complete: bool = False
    snapshots: tuple[Any, Any] = (None, None)

    @property
    def elapsed(self) -> float:
        """Seconds from the first push to the last expected delivery (or the last answer)."""
        return max(self.frames_done, self.pushes_done) - self.started


class Driver:
    """Streams and publishers against one broker at ``host:port``."""

    def __init__(self, host: str, port: int, secret: str, *, keep_times: bool = False) -> None:
        self.host = host
        self.port = port
        self.secret = secret
        self.keep_times = keep_times
        self.epoll = select.epoll()
        self.streams: dict[int, Stream] = {}
        self.publishers: dict[int, Publisher] = {}
        self.frames = 0
        self.lost: list[str] = []
        # The publisher side of a run in progress.
        self._answers: list[tuple[int, bytes]] = []

    # -- streams ----------------------------------------------------------------------
    def open_streams(self, count: int, query: str, *, timeout: float, max_pending: int = 200) -> list[Stream]:
        """Open ``count`` streams on ``/?query`` and wait until each has its first comment.

        Connects at most ``max_pending`` at a time, within the listen backlogs of both
        brokers, so that no SYN is dropped and retried a second later.
        """
        request = (
            f"GET /?{query} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        opened: list[Stream] = []
        pending: dict[int, Stream] = {}
        deadline = perf_counter() + timeout
        while len(opened) < count or pending:
            while len(opened) < count and len(pending) < max_pending:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                code = sock.connect_ex((self.host, self.port))
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise LoadError(f"connect failed: {errno.errorcode.get(code, code)}")
                stream = Stream(sock)
                stream.head = request  # the request, until it is sent
                opened.append(stream)
                pending[stream.fd] = stream
                self.streams[stream.fd] = stream
                self.epoll.register(stream.fd, select.EPOLLOUT)
            if perf_counter() > deadline:
                raise LoadError(f"{len(pending)} of {count} streams not open after {timeout}s")
            for fd, _mask in self.epoll.poll(0.2, 4096):
                stream = pending.get(fd)
                if stream is None:
                    self._readable(fd)
                    continue
                if self._connect_step(stream):
                    del pending[fd]
        return opened

    def _connect_step(self, stream: Stream) -> bool:
        """Advance one stream's handshake; True once its response head and first comment are in."""
        sock = stream.sock
        if not stream.chunks and stream.head.startswith(b"GET "):
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise LoadError(f"connect failed: {errno.errorcode.get(code, code)}")
            sock.sendall(stream.head)
            stream.head = b""
            self.epoll.modify(stream.fd, select.EPOLLIN)
            return False
        try:
            data = sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return False
        if not data:
            raise LoadError(f"stream closed during its handshake: {stream.head[:200]!r}")
        stream.head += data
        if not stream.head.startswith(b"HTTP/1.1 200"):
            if len(stream.head) >= 12:
                raise LoadError(f"stream refused: {stream.head[:200]!r}")
            return False
        stream.chunks.append(data)
        if self.keep_times:
            stream.times.append(perf_counter())
        if b"Connected to channel" not in stream.head:
            return False
        found = stream.head.count(FRAME)
        stream.frames = found
        self.frames += found
        stream.tail = stream.head[-_TAIL:]
        stream.head = b""
        stream.connected = True
        return True

    def close_streams(self, streams: list[Stream] | None = None) -> None:
        for stream in list(self.streams.values()) if streams is None else streams:
            if self.streams.pop(stream.fd, None) is not None:
                self.epoll.unregister(stream.fd)
                stream.sock.close()

    def _lost(self, stream: Stream, reason: str) -> None:
        stream.error = reason
        self.lost.append(reason)
        self.epoll.unregister(stream.fd)
        del self.streams[stream.fd]
        stream.sock.close()

    def _readable(self, fd: int) -> None:
        """Read one ready socket: the hot path of the generator."""
        stream = self.streams.get(fd)
        if stream is None:
            self._publisher_readable(self.publishers[fd])
            return
        try:
            data = stream.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(stream, f"stream error: {exc}")
            return
        if not data:
            self._lost(stream, "stream closed by the server")
            return
        stream.chunks.append(data)
        if self.keep_times:
            stream.times.append(perf_counter())
        # Frames that straddle two chunks are found in the seam between them.
        found = data.count(FRAME) + (stream.tail + data[:_TAIL]).count(FRAME)
        stream.tail = data[-_TAIL:]
        stream.frames += found
        self.frames += found

    # -- publishers -------------------------------------------------------------------
    def open_publishers(self, count: int) -> list[Publisher]:
        publishers = []
        for _ in range(count):
            sock = socket.create_connection((self.host, self.port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            publisher = Publisher(sock)
            self.publishers[publisher.fd] = publisher
            self.epoll.register(publisher.fd, select.EPOLLIN)
            publishers.append(publisher)
        return publishers

    def close_publishers(self) -> None:
        for publisher in self.publishers.values():
            self.epoll.unregister(publisher.fd)
            publisher.sock.close()
        self.publishers.clear()

    def _post(self, publisher: Publisher, body: bytes) -> None:
        head = (
            f"POST / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {self.secret}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        publisher.in_flight = True
        publisher.sent_at = perf_counter()
        publisher.sock.setblocking(True)  # requests are small: the kernel takes them whole
        try:
            publisher.sock.sendall(head + body)
        finally:
            publisher.sock.setblocking(False)

    def _publisher_readable(self, publisher: Publisher) -> None:
        try:
            data = publisher.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        if not data:
            raise LoadError("the broker closed a publisher connection")
        publisher.buffer += data
        while True:
            head_end = publisher.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = _CONTENT_LENGTH.search(publisher.buffer, 0, head_end + 2)
            if length is not None:
                end = head_end + 4 + int(length[1])
                if len(publisher.buffer) < end:
                    return
                answer = publisher.buffer[head_end + 4 : end]
            else:  # the reference answers in chunks
                parsed = _dechunk(publisher.buffer, head_end + 4)
                if parsed is None:
                    return
                answer, end = parsed
            status = int(publisher.buffer[9:12])
            self._answers.append((status, answer))
            publisher.buffer = publisher.buffer[end:]
            publisher.in_flight = False

    # -- a timed run ------------------------------------------------------------------
    def run(
        self,
        *,
        pushes: int,
        body: Callable[[int], bytes],
        expect_frames: int,
        timeout: float,
        rate: float | None = None,
        linger: float = 0.5,
        snapshot: Callable[[], Any] = lambda: None,
    ) -> RunResult:
        """Send ``pushes`` POSTs (``body(i)`` builds the i-th, at send time) over the open
        publishers, each with one request in flight, or paced at ``rate`` per second; read
        every stream until ``expect_frames`` more frames arrived; then keep reading for
        ``linger`` seconds so that duplicates show.

        ``snapshot()`` is called just before the first push and at completion (the server's
        CPU counters, for instance); both values are returned.
        """
        if not self.publishers and pushes:
            raise LoadError("no publisher connection open")
        result = RunResult(pushes=pushes)
        self._answers = []
        target = self.frames + expect_frames
        publishers = list(self.publishers.values())
        before = snapshot()
        cpu_before = cpu_seconds_self()
        result.started = start = perf_counter()
        deadline = start + timeout
        sent = 0
        poll = self.epoll.poll
        readable = self._readable
        while True:
            now = perf_counter()
            wait = 0.05
            if sent < pushes:
                for publisher in publishers:
                    if publisher.in_flight or sent >= pushes:
                        continue
                    if rate is not None:
                        due = start + sent / rate
                        if due > now:
                            wait = min(wait, due - now)
                            break
                    self._post(publisher, body(sent))
                    sent += 1
                    if rate is None:
                        wait = 0
            answered = len(self._answers)
            if answered == pushes and not result.pushes_done:
                result.pushes_done = perf_counter()
            if self.frames >= target and not result.frames_done:
                result.frames_done = perf_counter()
            if result.pushes_done and result.frames_done:
                break
            if now > deadline:
                break
            for fd, _mask in poll(wait, 4096):
                readable(fd)
        after = snapshot()
        result.generator_cpu = cpu_seconds_self() - cpu_before
        result.snapshots = (before, after)
        result.complete = bool(result.pushes_done and result.frames_done)
        result.frames = self.frames - (target - expect_frames)
        linger_until = perf_counter() + linger
        while perf_counter() < linger_until:
            for fd, _mask in poll(0.05, 4096):
                readable(fd)
        result.frames_after_linger = self.frames - (target - expect_frames)
        for status, answer in self._answers:
            result.statuses[status] += 1
            if status == 200:
                result.sent_total += json.loads(answer)["sent"]
        return result

    def pump(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds``."""
        until = perf_counter() + seconds
        while perf_counter() < until:
            for fd, _mask in self.epoll.poll(0.05, 4096):
                self._readable(fd)

    def close(self) -> None:
        self.close_streams()
        self.close_publishers()
        self.epoll.close()


def _dechunk(buffer: bytes, start: int) -> tuple[bytes, int] | None:
    """A chunked body starting at ``start``: (body, end offset), or None while incomplete."""
    body = b""
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(buffer[position:line_end].split(b";")[0], 16)
        chunk_start = line_end + 2
        if len(buffer) < chunk_start + size + 2:
            return None
        if size == 0:
            return body, chunk_start + 2
        body += buffer[chunk_start : chunk_start + size]
        position = chunk_start + size + 2
