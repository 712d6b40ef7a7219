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
import heapq
import json
import re
import resource
import select
import socket
import sys
from bisect import bisect_right
from collections import Counter, deque
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
_RETRY = re.compile(rb"\nretry: (\d+)\n")
#: What EventSource waits before reconnecting when the stream set no ``retry:``.
DEFAULT_RETRY_S = 3.0


class LoadError(RuntimeError):
    """The run could not be carried out as planned (a stream refused, a deadline passed)."""


def cpu_seconds_self() -> float:
    """user+sys of this process: the generator's own cost."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stream:
    """One subscriber socket and everything it received."""

    __slots__ = ("chunks", "connected", "error", "fd", "frames", "head", "receiving_at", "sock", "tail", "times")

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
        #: In a reconnect storm: when this stream first received a message pushed after the drop.
        self.receiving_at = 0.0

    def body(self) -> bytes:
        return b"".join(self.chunks)

    def seqs(self) -> list[int]:
        """The ``seq`` of every message received, in arrival order."""
        return [int(value) for value in _SEQ.findall(self.body())]

    def retry_hint(self) -> float:
        """Seconds to wait before reconnecting, as EventSource does: the last ``retry:``."""
        hints = _RETRY.findall(self.body())
        return int(hints[-1]) / 1000 if hints else DEFAULT_RETRY_S

    def seen_until_now(self) -> str | None:
        """Cut what was received back to the last whole event, as a client that is cut off
        has seen it, and return the last event id in it (None: no id seen)."""
        body = self.body()
        end = body.rfind(b"\n\n") + 2
        self.chunks = [body[:end]]
        self.times = self.times[-1:]
        start = body.rfind(b"\nid: ", 0, end)
        if start < 0:
            return None
        start += len(b"\nid: ")
        return body[start : body.index(b"\n", start)].decode()

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

    __slots__ = ("buffer", "fd", "in_flight", "request", "sent_at", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buffer = b""
        self.in_flight = False
        self.sent_at = 0.0
        self.request = b""  # the last one sent, to send again on a new connection


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
    #: Seconds from sending each push to having read its whole answer.
    round_trips: list[float] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        """Seconds from the first push to the last expected delivery (or the last answer)."""
        return max(self.frames_done, self.pushes_done) - self.started


@dataclass
class StormResult:
    """What one reconnect storm saw: every stream dropped at once, then reopened."""

    #: The streams as they were reopened, in the order of the dropped ones (None: never back).
    reopened: list[Stream | None] = field(default_factory=list)
    started: float = 0.0
    dropped_at: float = 0.0
    #: The first seq pushed after the drop: each stream is "receiving" once it got one of these.
    first_seq_after_drop: int = 0
    pushes: int = 0
    all_back_at: float = 0.0
    all_receiving_at: float = 0.0
    #: Handshakes that were refused or failed and tried again, by reason.
    retries: Counter[str] = field(default_factory=Counter)
    #: Publisher connections the broker closed (a drain), reopened, and pushes sent again on them.
    publisher_reconnects: int = 0
    pushes_sent_again: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    generator_cpu: float = 0.0
    snapshots: tuple[Any, Any] = (None, None)


class Connector:
    """Streams being opened: at most ``max_pending`` handshakes in flight, within the listen
    backlogs of both brokers, so that no SYN is dropped and retried by the kernel a second
    later. With ``retry_after``, a refused or failed handshake is tried again that many
    seconds later, as a client retries; without, it ends the run."""

    def __init__(
        self,
        driver: Driver,
        requests: list[bytes],
        *,
        max_pending: int,
        retry_after: float | None = None,
        now: bool = True,
    ) -> None:
        """``now``: start every request at once; otherwise each waits for its :meth:`schedule`."""
        self.driver = driver
        self.requests = requests
        self.max_pending = max_pending
        self.retry_after = retry_after
        self.opened: list[Stream | None] = [None] * len(requests)
        self.count = 0
        self.retries: Counter[str] = Counter()
        self._todo = deque(range(len(requests)) if now else ())
        self._later: list[tuple[float, int]] = []  # (due, slot), a heap
        self._pending: dict[int, tuple[int, Stream]] = {}

    @property
    def done(self) -> bool:
        return self.count == len(self.requests)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def schedule(self, slot: int, request: bytes, at: float) -> None:
        """Open ``slot`` with ``request`` once ``perf_counter()`` reaches ``at``."""
        self.requests[slot] = request
        heapq.heappush(self._later, (at, slot))

    def start_more(self, now: float) -> None:
        while self._later and self._later[0][0] <= now:
            self._todo.append(heapq.heappop(self._later)[1])
        while self._todo and len(self._pending) < self.max_pending:
            slot = self._todo.popleft()
            try:
                stream = self.driver._connect(self.requests[slot])
            except LoadError as exc:
                self._failed(slot, exc)
                continue
            self._pending[stream.fd] = (slot, stream)

    def step(self, fd: int) -> bool:
        """Advance the handshake on ``fd``; False when ``fd`` is not one of ours."""
        entry = self._pending.get(fd)
        if entry is None:
            return False
        slot, stream = entry
        try:
            finished = self.driver._connect_step(stream)
        except LoadError as exc:
            del self._pending[fd]
            self.driver.close_streams([stream])
            self._failed(slot, exc)
            return True
        if finished:
            del self._pending[fd]
            self.opened[slot] = stream
            self.count += 1
        return True

    def _failed(self, slot: int, exc: LoadError) -> None:
        if self.retry_after is None:
            raise exc
        self.retries[str(exc)[:80]] += 1
        heapq.heappush(self._later, (perf_counter() + self.retry_after, slot))


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
        # The publisher side of a run in progress: (status, body, round trip seconds) per answer.
        self._answers: list[tuple[int, bytes, float]] = []
        # In a storm: streams that have not yet received a seq at or above ``_awaited_seq``.
        self._awaiting: dict[int, Stream] = {}
        self._awaited_seq: int | None = None
        # In a storm the broker starts (a drain): the streams it is to end, and what reopens each.
        self._ending: dict[int, tuple[int, Stream]] = {}
        self._reopen: Callable[[int, Stream], None] = lambda index, stream: None
        # In a drain, the broker closes publisher connections too: each is reopened, and a push
        # it had in flight is sent again with the same Idempotency-Key, which makes that safe.
        self._publishers_reconnect = False
        self._pushes_keyed = 0
        self.publisher_reconnects = 0
        self.pushes_sent_again = 0

    # -- streams ----------------------------------------------------------------------
    def stream_request(self, query: str, last_event_id: str | None = None) -> bytes:
        """``GET /?query``, with ``Last-Event-ID`` as a reconnecting EventSource sends it."""
        resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        return (
            f"GET /?{query} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        ).encode()

    def open_streams(self, count: int, query: str, *, timeout: float, max_pending: int = 200) -> list[Stream]:
        """Open ``count`` streams on ``/?query`` and wait until each has its first comment."""
        connector = Connector(self, [self.stream_request(query)] * count, max_pending=max_pending)
        deadline = perf_counter() + timeout
        while not connector.done:
            now = perf_counter()
            if now > deadline:
                raise LoadError(f"{count - connector.count} of {count} streams not open after {timeout}s")
            connector.start_more(now)
            for fd, _mask in self.epoll.poll(0.2, 4096):
                if not connector.step(fd):
                    self._readable(fd)
        return [stream for stream in connector.opened if stream is not None]

    def _connect(self, request: bytes) -> Stream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise LoadError(f"connect failed: {errno.errorcode.get(code, code)}")
        stream = Stream(sock)
        stream.head = request  # the request, until it is sent
        self.streams[stream.fd] = stream
        self.epoll.register(stream.fd, select.EPOLLOUT)
        return stream

    def _connect_step(self, stream: Stream) -> bool:
        """Advance one stream's handshake; True once its response head and first comment are in."""
        try:
            return self._handshake(stream)
        except OSError as exc:  # reset or refused while connecting
            raise LoadError(f"stream handshake failed: {exc}") from exc

    def _handshake(self, stream: Stream) -> bool:
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
        if self._awaited_seq is not None:
            self._awaiting[stream.fd] = stream
            self._check_receiving(stream, stream.head)  # a resumed stream's replay may hold one
        stream.head = b""
        stream.connected = True
        return True

    def close_streams(self, streams: list[Stream] | None = None) -> None:
        for stream in list(self.streams.values()) if streams is None else streams:
            if self.streams.pop(stream.fd, None) is not None:
                self.epoll.unregister(stream.fd)
                self._awaiting.pop(stream.fd, None)
                stream.sock.close()

    def _lost(self, stream: Stream, reason: str) -> None:
        ending = self._ending.pop(stream.fd, None)
        self.close_streams([stream])
        if ending is not None:  # ended by a drain, as expected: the client comes back
            self._reopen(*ending)
            return
        stream.error = reason
        self.lost.append(reason)

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
        if self._awaiting and found:
            self._check_receiving(stream, data)

    def _check_receiving(self, stream: Stream, data: bytes) -> None:
        """Whether ``data`` holds a message pushed after the drop (a seq split between two
        chunks is missed here, and the stream counts from its next message)."""
        awaited = self._awaited_seq or 0
        if stream.fd in self._awaiting and any(int(seq) >= awaited for seq in _SEQ.findall(data)):
            stream.receiving_at = perf_counter()
            del self._awaiting[stream.fd]

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

    def _publisher_closed(self, publisher: Publisher) -> None:
        if not self._publishers_reconnect:
            raise LoadError("the broker closed a publisher connection")
        self.epoll.unregister(publisher.fd)
        del self.publishers[publisher.fd]
        publisher.sock.close()
        (replacement,) = self.open_publishers(1)
        self.publisher_reconnects += 1
        if publisher.in_flight:
            self.pushes_sent_again += 1
            self._send(replacement, publisher.request)

    def close_publishers(self) -> None:
        for publisher in self.publishers.values():
            self.epoll.unregister(publisher.fd)
            publisher.sock.close()
        self.publishers.clear()

    def _post(self, publisher: Publisher, body: bytes) -> None:
        key = ""
        if self._publishers_reconnect:
            self._pushes_keyed += 1
            key = f"Idempotency-Key: bench-{id(self)}-{self._pushes_keyed}\r\n"
        head = (
            f"POST / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {self.secret}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{key}\r\n"
        ).encode()
        self._send(publisher, head + body)

    def _send(self, publisher: Publisher, request: bytes) -> None:
        publisher.in_flight = True
        publisher.request = request
        publisher.sent_at = perf_counter()
        publisher.sock.setblocking(True)  # requests are small: the kernel takes them whole
        try:
            publisher.sock.sendall(request)
        finally:
            publisher.sock.setblocking(False)

    def _publisher_readable(self, publisher: Publisher) -> None:
        try:
            data = publisher.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self._publisher_closed(publisher)
            return
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
            self._answers.append((status, answer, perf_counter() - publisher.sent_at))
            publisher.buffer = publisher.buffer[end:]
            publisher.in_flight = False

    def _publish_due(
        self,
        publishers: list[Publisher],
        sent: int,
        pushes: int,
        body: Callable[[int], bytes],
        rate: float | None,
        start: float,
        now: float,
    ) -> tuple[int, float]:
        """Send the pushes that are due, one in flight per publisher: as fast as answers
        come, or paced at ``rate`` per second from ``start``. Returns the count sent so far
        and how long the loop may wait for sockets."""
        wait = 0.05
        for publisher in publishers:
            if sent >= pushes:
                break
            if publisher.in_flight:
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
        return sent, wait

    def _count_answers(self, statuses: Counter[int]) -> int:
        """The run's answers into ``statuses``; returns the sum of their ``sent``."""
        sent_total = 0
        for status, answer, _seconds in self._answers:
            statuses[status] += 1
            if status == 200:
                sent_total += json.loads(answer)["sent"]
        return sent_total

    def _wait_answers(self, seconds: float) -> None:
        """Read until every publisher's request in flight is answered, for at most ``seconds``."""
        until = perf_counter() + seconds
        while any(p.in_flight for p in self.publishers.values()) and perf_counter() < until:
            for fd, _mask in self.epoll.poll(0.05, 4096):
                self._readable(fd)

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
            sent, wait = self._publish_due(publishers, sent, pushes, body, rate, start, now)
            if len(self._answers) == pushes and not result.pushes_done:
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
        self.pump(linger)
        result.frames_after_linger = self.frames - (target - expect_frames)
        result.sent_total = self._count_answers(result.statuses)
        result.round_trips = [seconds for _status, _answer, seconds in self._answers]
        return result

    def storm(
        self,
        streams: list[Stream],
        request_for: Callable[[int, str | None], bytes],
        *,
        body: Callable[[int], bytes],
        first_seq: int,
        rate: float,
        drop_after: float,
        timeout: float,
        retry_after: float = 0.5,
        max_pending: int = 200,
        linger: float = 1.0,
        snapshot: Callable[[], Any] = lambda: None,
        drop: Callable[[], None] | None = None,
    ) -> StormResult:
        """A reconnect storm. Pushes go on at ``rate`` per second on the open publishers from
        start to end (``body(i)`` builds the i-th, whose seq is ``first_seq + i``). After
        ``drop_after`` seconds every stream in ``streams`` is closed at once, as a proxy
        restart or a network blip would, and reopened at once with ``request_for(index,
        the last event id it saw)``, at most ``max_pending`` handshakes in flight, a refused
        one retried after ``retry_after`` seconds. With ``drop``, the broker drops them
        instead: ``drop()`` is called (a signal to drain, say) and each stream it ends is
        reopened after its ``retry:`` hint, as EventSource does. The storm ends when every
        stream is back and has received a message pushed after the drop, or ``timeout``
        seconds after the drop; then the pushes stop and the streams are read for
        ``linger`` seconds more.

        ``snapshot()`` is called at the drop and at the end of the storm.
        """
        if not self.publishers:
            raise LoadError("no publisher connection open")
        result = StormResult()
        self._answers = []
        self._publishers_reconnect = drop is not None
        connector: Connector | None = None
        before: Any = None
        result.started = start = perf_counter()
        deadline = start + drop_after + timeout
        sent = 0
        poll = self.epoll.poll
        cpu_before = cpu_seconds_self()
        while True:
            now = perf_counter()
            publishers = list(self.publishers.values())  # a drain replaces them
            sent, wait = self._publish_due(publishers, sent, sys.maxsize, body, rate, start, now)
            if connector is None and now >= start + drop_after:
                result.first_seq_after_drop = self._awaited_seq = first_seq + sent
                if drop is None:
                    # What each client had seen is settled before the clock starts: the drop
                    # itself is the close of every socket, back to back.
                    last_ids = [stream.seen_until_now() for stream in streams]
                    requests = [request_for(index, last_id) for index, last_id in enumerate(last_ids)]
                    connector = Connector(self, requests, max_pending=max_pending, retry_after=retry_after)
                else:
                    connector = self._await_drain(streams, request_for, max_pending, retry_after)
                before = snapshot()
                cpu_before = cpu_seconds_self()
                result.dropped_at = perf_counter()
                if drop is None:
                    self.close_streams(streams)
                else:
                    drop()
            if connector is not None:
                connector.start_more(now)
                if connector.done and not result.all_back_at:
                    result.all_back_at = perf_counter()
                if connector.done and not self._awaiting:
                    result.all_receiving_at = perf_counter()
                    break
                wait = min(wait, 0.05 if connector.in_flight else 0.01)
            if now > deadline:
                break
            for fd, _mask in poll(wait, 4096):
                if connector is None or not connector.step(fd):
                    self._readable(fd)
        result.snapshots = (before, snapshot())
        result.generator_cpu = cpu_seconds_self() - cpu_before
        result.pushes = sent
        self._awaited_seq = None
        self._awaiting.clear()
        self._ending.clear()
        self._wait_answers(30)
        self.pump(linger)
        self._publishers_reconnect = False
        result.publisher_reconnects, result.pushes_sent_again = self.publisher_reconnects, self.pushes_sent_again
        self._count_answers(result.statuses)
        if connector is not None:
            result.reopened = connector.opened
            result.retries = connector.retries
        return result

    def _await_drain(
        self,
        streams: list[Stream],
        request_for: Callable[[int, str | None], bytes],
        max_pending: int,
        retry_after: float,
    ) -> Connector:
        """A connector that reopens each of ``streams`` once the broker has ended it, after
        its ``retry:`` hint, with the last id it saw."""
        connector = Connector(self, [b""] * len(streams), max_pending=max_pending, retry_after=retry_after, now=False)
        self._ending = {stream.fd: (index, stream) for index, stream in enumerate(streams)}

        def reopen(index: int, stream: Stream) -> None:
            last_id = stream.seen_until_now()
            connector.schedule(index, request_for(index, last_id), perf_counter() + stream.retry_hint())

        self._reopen = reopen
        return connector

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
