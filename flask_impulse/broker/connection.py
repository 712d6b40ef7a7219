"""One open stream: its subscription, and the bounded queue between publishers and its writer.

What touches the client's socket without knowing the queue (the direct-writes switch, TCP
options, the hang-up watcher) is in ``transport.py``."""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import gevent

from .. import metrics
from ..sse import HEARTBEAT, encode_retry
from .message import Framed, Message, MessageKey
from .subscription import Subscription
from .transport import HangupWatcher, StalledWrite

#: Seconds a graceful end (a drain) gives a write in progress, and the final write, to finish.
GRACEFUL_WRITE_TIMEOUT = 1.0

_to_flush: list[Connection] = []


def _schedule_flush(connection: Connection) -> None:
    """Flush ``connection`` at the end of this turn of the event loop (one callback for all)."""
    if not _to_flush:
        gevent.get_hub().loop.run_callback(_flush_all)
    _to_flush.append(connection)


def _flush_all() -> None:
    connections = _to_flush[:]
    _to_flush.clear()
    # The first connection scheduled in this turn holds its oldest message.
    first = connections[0]._queue
    oldest = first[0].published_at if first else None
    for connection in connections:
        connection._flush()
    if oldest is not None and metrics.recorder.enabled:
        metrics.recorder.written(oldest)


class Connection(Subscription):
    """A subscriber's stream: its subscription, its queue and its writer.

    Publishers call :meth:`offer` (through the broker); it never blocks. The stream's own
    greenlet runs :meth:`frames`, which waits for messages and hands them to the server in
    one write per wake-up. The queue is bounded by count and by bytes: a client that does
    not read is closed rather than allowed to hold memory.

    With :meth:`write_directly`, messages offered while the writer sleeps are sent from the
    event loop at the end of its turn, without blocking and without waking the writer: no
    greenlet switch and no pass through the WSGI server per message, and a burst goes out
    in one ``send``. What the socket does not take goes to the writer, which sends it
    before anything else.
    """

    __slots__ = (
        "__weakref__",
        "_chunked",
        "_closing",
        "_flush_scheduled",
        "_greenlet",
        "_hangup_watcher",
        "_max_bytes",
        "_max_messages",
        "_parked",
        "_queue",
        "_queued_bytes",
        "_raw_send",
        "_retry_ms",
        "_send_now",
        "_skip_until",
        "_socket",
        "_timer",
        "_unsent",
        "_woken",
        "_writing",
    )

    def __init__(
        self,
        channels: tuple[str, ...],
        topic: str | None,
        audience_key: bytes | None,
        *,
        max_messages: int,
        max_bytes: int,
    ) -> None:
        super().__init__(channels, topic, audience_key)
        # A list, not a deque: it is only appended to and emptied whole, and an empty deque
        # costs a 600-byte block per idle stream.
        self._queue: list[Message] = []
        self._queued_bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        # The writer's wake-up: a flag, and a switch scheduled in the hub while it is parked.
        self._woken = False
        self._parked = False
        self._timer: Any = None  # the heartbeat's libev timer, made when the writer first parks
        self._closing: str | None = None
        self._retry_ms: int | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._writing = False
        self._hangup_watcher: HangupWatcher | None = None
        # During resume, live messages at or before the last replayed id are already sent.
        self._skip_until: MessageKey | None = None
        # Direct writes: the client socket, its non-blocking send, set while the writer sleeps
        # (_send_now), and the rest of a frame the socket did not take (_unsent).
        self._socket: socket.socket | None = None
        self._raw_send: Callable[[bytes], int] | None = None
        self._send_now: Callable[[bytes], int] | None = None
        self._chunked = False
        self._unsent = b""
        self._flush_scheduled = False

    # -- publisher side ---------------------------------------------------------------
    def offer(self, message: Message) -> bool:
        """Queue ``message``, which the broker selected for this subscription (see ``select``)."""
        if self._closing is not None:
            return False
        if len(self._queue) >= self._max_messages or self._queued_bytes + len(message.frame) > self._max_bytes:
            self.close("slow consumer: its queue is full")
            metrics.recorder.dropped()
            return False
        self._queue.append(message)
        self._queued_bytes += len(message.frame)
        if self._send_now is None:
            self._wake()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            _schedule_flush(self)
        return True

    #: A connection is the receiver connected to its channels' signals.
    __call__ = offer

    def _flush(self) -> None:
        """Send what was queued since the last turn of the event loop, without waking the writer.

        Runs once per loop turn for every connection that got messages in it, after every
        request that was ready in that turn was handled: a burst of pushes goes out in one
        ``send`` per connection, and a lone push costs one ``send``, as in Node.
        """
        self._flush_scheduled = False
        send, queue = self._send_now, self._queue
        if send is None or self._closing is not None or self._skip_until is not None:
            self._wake()  # the writer took over in the meantime: it writes the queue
            return
        if not queue:
            return
        if self._chunked:
            data = queue[0].chunk if len(queue) == 1 else b"".join([message.chunk for message in queue])
        else:
            data = queue[0].frame if len(queue) == 1 else b"".join([message.frame for message in queue])
        queue.clear()
        self._queued_bytes = 0
        try:
            written = send(data)
        except BlockingIOError:
            written = 0
        except OSError:
            self.close("client disconnected")
            return
        if written < len(data):
            # The client's socket buffer is full: the writer sends the rest, and what follows.
            self._send_now = None
            self._unsent = data[written:]
            self._queued_bytes = len(self._unsent)
            self._wake()

    def _wake(self) -> None:
        """Have the writer look at its queue and its state (from any greenlet, or the hub)."""
        if self._woken:
            return  # already told, and its switch already scheduled if it is parked
        self._woken = True
        if self._parked:
            gevent.get_hub().loop.run_callback(self._resume, True)

    def _resume(self, woken: bool) -> None:
        """In the hub: switch to the writer if it is still parked (a timer and a wake-up in the
        same loop turn both land here; only the first finds it parked)."""
        if self._parked and self._greenlet is not None:
            self._parked = False
            self._greenlet.switch(woken)

    def _timed_out(self) -> None:
        self._resume(False)  # a method of its own: no arguments tuple kept by each parked timer

    def _park(self, timeout: float) -> bool:
        """Sleep until :meth:`_wake` or ``timeout`` seconds; True when woken.

        Not an ``Event.wait``: its timeout, waiter and links cost about 900 bytes of saved C
        stack and 300 of objects per idle stream (measured with ``greenlet._stack_saved``),
        and an idle stream spends its life here.
        """
        if self._woken:
            return True
        hub = gevent.get_hub()
        timer = self._timer
        if timer is None:
            # Repeating, and restarted with again(): libev's idiom for an inactivity timeout. A
            # one-shot timer started again after it fired fires at once (a heartbeat storm).
            timer = self._timer = hub.loop.timer(timeout, timeout)
        timer.again(self._timed_out, update=True)  # from now, not from the start of this loop turn
        self._parked = True
        try:
            return bool(hub.switch())
        finally:
            self._parked = False
            timer.stop()

    def skip_through(self, key: MessageKey) -> None:
        """Drop live messages up to ``key``: a resuming client already has them."""
        self._skip_until = key

    def close(self, reason: str, retry_ms: int | None = None) -> None:
        """End the stream soon.

        With ``retry_ms`` the end is graceful (a drain): messages already queued are still
        written, then ``retry:`` tells the client when to reconnect; a write that has not
        finished within ``GRACEFUL_WRITE_TIMEOUT`` is cut. Without it, the client is slow or
        gone: its queue is dropped and a write in progress is cut at once. Either way, what
        the client misses stays in the history for its resume.
        """
        if self._closing is not None:
            return
        self._closing = reason
        self._retry_ms = retry_ms
        self._send_now = None
        self._wake()
        if retry_ms is None:
            self._queue.clear()
            self._queued_bytes = 0
            self._unsent = b""
            self._cut_stalled_write()
        elif self._writing:
            gevent.spawn_later(GRACEFUL_WRITE_TIMEOUT, self._cut_stalled_write)

    def _cut_stalled_write(self) -> None:
        if self._writing and self._greenlet is not None:
            # The writer is stuck in a write to a client that is not reading: break it out.
            self._greenlet.kill(StalledWrite(self._closing or "stream closed"), block=False)

    @property
    def closing_reason(self) -> str | None:
        return self._closing

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- writer side ------------------------------------------------------------------
    def write_directly(self, client: socket.socket, *, chunked: bool) -> None:
        """Let the event loop send to ``client`` itself while the writer sleeps.

        Only for a server that has sent the response head when the first frame is written,
        and frames the body as ``chunked`` says (HTTP/1.1 chunked encoding, or raw bytes):
        see :func:`.transport.allow_direct_writes`.
        """
        self._socket = client
        self._raw_send = getattr(client, "_sock", client).send  # gevent's socket wraps a non-blocking one
        self._chunked = chunked

    def watch_hangup(self, client: socket.socket) -> None:
        """Close as soon as the client hangs up, not at the next write (see :class:`HangupWatcher`)."""
        self._hangup_watcher = HangupWatcher(client, self._hung_up)

    def _hung_up(self) -> None:
        self.close("client disconnected")

    def frames(
        self,
        preamble: bytes,
        replay: Sequence[Framed],
        heartbeat_interval: float,
        on_end: Callable[[], None] | None = None,
    ) -> Generator[bytes, None, None]:
        """The stream body: preamble and replay, then live messages and heartbeats.

        Each ``yield`` is one socket write. A write that cannot finish within a heartbeat
        interval means the client is gone or not reading, so it is cut off: pywsgi and
        gunicorn see a disconnect only when a write fails, which is why the heartbeat is
        also the dead-client detector. ``on_end`` runs when the stream ends, however.

        One generator, not several nested: an idle stream's greenlet is parked inside it,
        and each level of generators costs about a kilobyte of saved C stack per stream.
        """
        self._greenlet = gevent.getcurrent()
        try:
            first = preamble
            if replay:
                first += b"".join(message.frame for message in replay)
                self._skip_until = replay[-1].key
            yield from self._write(first, heartbeat_interval)
            del first, preamble, replay  # sent: an idle stream need not keep them
            queue = self._queue
            while True:
                if not queue and not self._unsent and self._closing is None:
                    self._woken = False
                    if self._skip_until is None:
                        self._send_now = self._raw_send
                    try:
                        woke = self._park(heartbeat_interval)
                    finally:
                        self._send_now = None
                    if not woke:
                        yield from self._write(HEARTBEAT, heartbeat_interval)
                        continue
                if self._unsent:
                    graceful = self._closing is not None
                    self._write_unsent(
                        min(heartbeat_interval, GRACEFUL_WRITE_TIMEOUT) if graceful else heartbeat_interval
                    )
                batch = list(queue)
                queue.clear()
                self._queued_bytes = 0
                if self._skip_until is not None:
                    batch = self._drop_replayed(batch)
                frames = b"".join([message.frame for message in batch])
                if self._closing is not None:
                    if self._retry_ms is not None:
                        tail = frames + encode_retry(self._retry_ms)
                        yield from self._write(tail, min(heartbeat_interval, GRACEFUL_WRITE_TIMEOUT))
                    return
                if frames:
                    yield from self._write(frames, heartbeat_interval)
                    if metrics.recorder.enabled:
                        metrics.recorder.written(batch[0].published_at)
        finally:
            if self._timer is not None:
                self._timer.close()
            if self._hangup_watcher is not None:
                self._hangup_watcher.stop()
            if on_end is not None:
                on_end()

    def _drop_replayed(self, batch: list[Message]) -> list[Message]:
        skip_until = self._skip_until
        assert skip_until is not None
        fresh = [message for message in batch if message.key > skip_until]
        if fresh:
            self._skip_until = None  # ids only increase: nothing later can be a duplicate
        return fresh

    def _write_unsent(self, stall_after: float) -> None:
        """Send the rest of a directly written frame: it is framed already, so it bypasses the server."""
        data, self._unsent = self._unsent, b""
        self._queued_bytes -= len(data)
        assert self._socket is not None
        self._writing = True
        timer = gevent.Timeout(stall_after, StalledWrite)
        timer.start()
        try:
            self._socket.sendall(data)
        finally:
            timer.close()
            self._writing = False

    def _write(self, data: bytes, stall_after: float) -> Iterator[bytes]:
        # The exception's class, made only if the write stalls: not an instance per write.
        self._writing = True
        timer = gevent.Timeout(stall_after, StalledWrite)
        timer.start()
        try:
            yield data
        finally:
            timer.close()
            self._writing = False
