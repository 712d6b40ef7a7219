"""The stream groups of a ``RealtimeClient``: the subscriptions that share a token and a topic,
the one HTTP stream they share, and its supervisor and reader threads. No Flask, no gevent:
``http.client`` and threads (greenlets under gevent's monkey-patching).

A group reaches its client only through :class:`Owner`, the few things it needs from it.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

from .. import _json
from ..channels import Event
from ..errors import MissedMessages, RealtimeClientError
from ..sse import ServerSentEvent, SSEDecoder

T = TypeVar("T")

ConnectionState = Literal["connecting", "connected", "disconnected"]
Handler = Callable[[Event[T]], object]


@dataclass(frozen=True)
class PresenceEvent:
    """A member's first stream opened (``join``) or its last one ended (``leave``) on a
    presence channel: the ``event: presence`` frames a ``?presence=1`` stream carries."""

    channel: str
    member: str
    action: Literal["join", "leave"]


PresenceHandler = Callable[[PresenceEvent], object]
#: One logger for every client of the package, whichever module logs.
_LOG = logging.getLogger("flask_impulse.client")
#: How long a replaced stream keeps being read after its successor opened, so that a message
#: already on its way through the old one is not cut off (duplicates are dropped by id).
SWITCH_GRACE = 1.0
#: Message ids remembered per group to drop the copies two overlapping streams deliver.
_RECENT_IDS = 2048


class StreamSettings(Protocol):
    """The client's settings a group reads, when it reads them (the client's attributes)."""

    @property
    def service_url(self) -> str: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def heartbeat_interval(self) -> float: ...
    @property
    def retry_attempts(self) -> int: ...
    @property
    def retry_delay(self) -> float: ...
    @property
    def max_retry_delay(self) -> float: ...
    @property
    def ssl_context(self) -> ssl.SSLContext: ...


@dataclass(frozen=True)
class Owner:
    """What a group needs from the client that holds it, passed in rather than reached for."""

    settings: StreamSettings
    #: The client's lock: subscriptions change under it, so a group reads them under it too.
    lock: threading.RLock
    #: Hands an error to the client's ``on_error`` callbacks.
    report: Callable[[Exception], None]
    #: Tells the client that a group or a stream changed state.
    state_changed: Callable[[], None]
    #: Count a message received and a reconnect attempt, each under ``lock``.
    received: Callable[[], None]
    reconnected: Callable[[], None]


@dataclass(eq=False)
class Subscription:
    channel: str
    #: A message handler (``Handler``), or a ``PresenceHandler`` when ``presence`` is set.
    handler: Callable[[Any], object]
    decode: Callable[[Any], Any]
    #: True: the handler takes the channel's join and leave events, not its messages.
    presence: bool = False


class Group:
    """The subscriptions that share a token and a topic, and the one stream they share.

    A supervisor thread owns the stream's life: it opens it, replaces it when the channel set
    changes, and reconnects it with backoff when it drops. Each stream reads on its own thread.
    """

    def __init__(self, owner: Owner, token: str | None, topic: str | None) -> None:
        self.owner = owner
        self.token = token
        self.topic = topic
        self.subscriptions: dict[str, list[Subscription]] = {}
        self.state: ConnectionState = "connecting"
        self.last_event_id = ""
        self._wake = threading.Condition(threading.Lock())
        self._dirty = True
        self._closed = False
        self._current: Stream | None = None
        self._streams: set[Stream] = set()
        self._dispatching = threading.Lock()
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()
        self._live_channels: frozenset[str] = frozenset()
        self._live_presence = False
        self._supervisor: threading.Thread | None = None
        #: What the next stream asks for: presence events or not (read with the channels).
        self._presence = False

    # -- called under the client's lock --------------------------------------------------------
    def add(self, subscription: Subscription) -> None:
        watched = self.watches_presence
        handlers = self.subscriptions.setdefault(subscription.channel, [])
        handlers.append(subscription)
        if len(handlers) == 1 or self.watches_presence != watched:
            self._changed()

    def remove(self, subscription: Subscription) -> None:
        watched = self.watches_presence
        handlers = self.subscriptions.get(subscription.channel)
        if handlers and subscription in handlers:
            handlers.remove(subscription)
            if not handlers:
                del self.subscriptions[subscription.channel]
                self._changed()
            elif self.watches_presence != watched:
                self._changed()

    def remove_channel(self, channel: str) -> None:
        if self.subscriptions.pop(channel, None):
            self._changed()

    @property
    def watches_presence(self) -> bool:
        """Whether the group's stream asks for presence events (``?presence=1``)."""
        return any(s.presence for handlers in self.subscriptions.values() for s in handlers)

    @property
    def empty(self) -> bool:
        return not self.subscriptions

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(sorted(self.subscriptions))

    @property
    def handler_count(self) -> int:
        return sum(len(handlers) for handlers in self.subscriptions.values())

    @property
    def open_streams(self) -> int:
        return sum(1 for stream in list(self._streams) if stream.connected and not stream.ended)

    @property
    def live(self) -> bool:
        return (
            self.state == "connected"
            and set(self.subscriptions) <= self._live_channels
            and self._live_presence >= self.watches_presence
        )

    def _changed(self) -> None:
        with self._wake:
            self._dirty = True
            self._wake.notify_all()
        if self.subscriptions and (self._supervisor is None or not self._supervisor.is_alive()):
            self._supervisor = threading.Thread(target=self._supervise, name="impulse-subscriber", daemon=True)
            self._supervisor.start()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        for stream in list(self._streams):
            stream.close()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(self.owner.settings.connect_timeout + 5)
        self.state = "disconnected"

    # -- the supervisor thread ---------------------------------------------------------------
    def _supervise(self) -> None:
        retries = 0
        try:
            while True:
                with self._wake:
                    current = self._current
                    while not self._closed and not self._dirty and current is not None and not current.ended:
                        self._wake.wait()
                    if self._closed:
                        return
                    self._dirty = False
                with self.owner.lock:
                    channels = self.channels
                    self._presence = self.watches_presence
                if not channels:
                    return
                if current is not None and not current.ended:
                    if current.channels == channels and current.presence == self._presence:
                        continue  # changed and changed back, or several changes seen in one pass
                    if not self._switch(current, channels):
                        continue  # the replacement failed: the next pass reconnects
                    retries = 0
                    continue
                if current is not None:  # the stream ended or never opened: reconnect
                    error = current.error
                    if current.connected:
                        retries = 0
                        self._set_state("disconnected")
                    if error is not None and error.final:
                        return self._give_up(error)
                    if error is not None:
                        self.owner.report(error)
                    if retries >= self.owner.settings.retry_attempts:
                        return self._give_up(
                            RealtimeClientError(
                                f"gave up after {retries} reconnect attempts: {error or 'stream closed'}",
                                status=error.status if error else None,
                                final=True,
                            )
                        )
                    retries += 1
                    self._set_state("disconnected")
                    if self._sleep(self._backoff(retries, current)):
                        return
                    self.owner.reconnected()
                self._set_state("connecting")
                stream = self._open(channels, self.last_event_id)
                if stream.connected:
                    retries = 0
                    self._live_channels, self._live_presence = frozenset(channels), self._presence
                    self._set_state("connected")
        finally:
            for stream in list(self._streams):
                stream.close()
            self._current = None

    def _open(self, channels: tuple[str, ...], last_event_id: str) -> Stream:
        stream = Stream(self, channels, last_event_id, self._presence)
        self._streams.add(stream)
        self._current = stream
        stream.start()
        stream.wait_opened()
        return stream

    def _switch(self, old: Stream, channels: tuple[str, ...]) -> bool:
        """Replace ``old`` with a stream on ``channels``, opening the new one first."""
        _LOG.debug("switching stream to channels %s", channels)
        new = self._open(channels, "")
        if not new.connected:
            old.close()
            return False
        self._live_channels, self._live_presence = frozenset(channels), self._presence
        self._set_state("connected")
        timer = threading.Timer(min(SWITCH_GRACE, self.owner.settings.heartbeat_interval), old.close)
        timer.daemon = True
        timer.start()
        return True

    def _backoff(self, retries: int, previous: Stream) -> float:
        if previous.retry_after is not None:
            return previous.retry_after
        settings = self.owner.settings
        base = min(settings.max_retry_delay, settings.retry_delay * 2.0 ** (retries - 1))
        return base / 2 + random.uniform(0, base / 2)

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the group closes first; True if it closed."""
        deadline = time.monotonic() + seconds
        with self._wake:
            while not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
            return True

    def _give_up(self, error: RealtimeClientError) -> None:
        self.owner.report(error)
        self._set_state("disconnected")

    def _set_state(self, state: ConnectionState) -> None:
        self.state = state
        self.owner.state_changed()

    def stream_ended(self, stream: Stream) -> None:
        self._streams.discard(stream)
        with self._wake:
            self._wake.notify_all()
        self.owner.state_changed()

    # -- reader threads ------------------------------------------------------------------------
    def dispatch(self, event: ServerSentEvent, stream: Stream | None = None) -> None:
        if event.event == "gap":
            self.owner.report(MissedMessages("the server's history no longer holds every missed message"))
            return
        if event.event == "presence":
            # Presence events carry no id to drop a copy by: while a replaced stream is still
            # read, only the one that replaces it (once open) is heard.
            current = self._current
            if stream is None or current is None or stream is current or not current.connected:
                self._dispatch_presence(event)
            return
        if event.event != "message":
            return
        with self._dispatching:
            if event.id:
                if event.id in self._recent_set:
                    return
                self._remember(event.id)
                self.last_event_id = event.id
            try:
                data = _json.loads(event.data)
                channel = data["channel"]
            except (ValueError, KeyError, TypeError) as exc:
                self.owner.report(RealtimeClientError(f"unreadable message {event.data[:200]!r}: {exc}"))
                return
            with self.owner.lock:
                subscriptions = [s for s in self.subscriptions.get(channel, ()) if not s.presence]
                self.owner.received()
            for subscription in subscriptions:
                try:
                    payload = subscription.decode(data.get("payload"))
                    subscription.handler(Event(channel, payload, event.id, self.topic))
                except Exception as exc:
                    self.owner.report(exc)

    def _dispatch_presence(self, event: ServerSentEvent) -> None:
        try:
            data = _json.loads(event.data)
            presence = PresenceEvent(str(data["channel"]), str(data["member"]), data["action"])
        except (ValueError, KeyError, TypeError) as exc:
            self.owner.report(RealtimeClientError(f"unreadable presence event {event.data[:200]!r}: {exc}"))
            return
        with self.owner.lock:
            subscriptions = [s for s in self.subscriptions.get(presence.channel, ()) if s.presence]
        for subscription in subscriptions:
            try:
                subscription.handler(presence)
            except Exception as exc:
                self.owner.report(exc)

    def _remember(self, event_id: str) -> None:
        self._recent.append(event_id)
        self._recent_set.add(event_id)
        if len(self._recent) > _RECENT_IDS:
            self._recent_set.discard(self._recent.popleft())


class Stream:
    """One HTTP stream, read on its own thread with a socket timeout of two heartbeats."""

    def __init__(self, group: Group, channels: tuple[str, ...], last_event_id: str, presence: bool = False) -> None:
        self.group = group
        self.channels = channels
        self.presence = presence
        self.last_event_id = last_event_id
        self.connected = False
        self.ended = False
        self.error: RealtimeClientError | None = None
        self.retry_after: float | None = None
        self._opened = threading.Event()
        self._closing = False
        self._connection: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="impulse-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_opened(self) -> None:
        self._opened.wait()

    def close(self) -> None:
        """End the stream from any thread: shutting the socket down wakes its blocked reader."""
        self._closing = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        owner = self.group.owner
        try:
            response = self._connect()
            if response is not None:
                self.connected = True
                self._opened.set()
                owner.state_changed()
                self._read(response)
        except (OSError, http.client.HTTPException) as exc:
            if not self._closing:
                self.error = self._describe(exc)
        finally:
            self.ended = True
            if self._connection is not None:
                self._connection.close()
            self._opened.set()
            self.group.stream_ended(self)

    def _connect(self) -> http.client.HTTPResponse | None:
        settings = self.group.owner.settings
        parts = urlsplit(settings.service_url)
        query = [("channel", channel) for channel in self.channels]
        if self.group.token:
            query.append(("token", self.group.token))
        if self.group.topic:
            query.append(("topic", self.group.topic))
        if self.presence:
            query.append(("presence", "1"))
        target = (parts.path or "/") + "?" + urlencode(query)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=settings.connect_timeout, context=settings.ssl_context
            )
        else:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=settings.connect_timeout)
        self._connection = connection
        if self._closing:
            return None
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        _LOG.debug("opening %s (Last-Event-ID %r)", target, self.last_event_id)
        connection.request("GET", target, headers=headers)
        # Held here: http.client lets go of the socket of a response that ends at close.
        self._sock = connection.sock
        response = connection.getresponse()
        if response.status != 200:
            self.error = self._refused(response)
            return None
        content_type = response.getheader("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            self.error = RealtimeClientError(f"not an event stream: Content-Type {content_type!r}", final=True)
            return None
        # The watchdog: a live stream carries a heartbeat every interval, so two silent
        # intervals mean a dead connection (a proxy that kept it half-open, a frozen server).
        if self._sock is not None:
            self._sock.settimeout(2 * settings.heartbeat_interval)
        return response

    def _read(self, response: http.client.HTTPResponse) -> None:
        decoder = SSEDecoder()
        while not self._closing:
            chunk = response.read1(65536)
            if not chunk:
                if decoder.retry is not None:
                    self.retry_after = decoder.retry / 1000
                if not self._closing:
                    self.error = RealtimeClientError("the server closed the stream")
                return
            for event in decoder.feed(chunk):
                if self._closing:
                    return
                self.group.dispatch(event, self)

    def _refused(self, response: http.client.HTTPResponse) -> RealtimeClientError:
        body = response.read(65536)
        try:
            answer = _json.loads(body)
            error = answer.get("error") if isinstance(answer, dict) else None
        except ValueError:
            error = None
        retry_after = response.getheader("Retry-After")
        if retry_after and retry_after.isdigit():
            self.retry_after = float(retry_after)
        # Overload and rate limits pass; a bad request, a refused token or a wrong URL do not.
        final = 400 <= response.status < 500 and response.status not in (408, 429)
        return RealtimeClientError(
            f"HTTP {response.status}: {error or response.reason}", status=response.status, final=final
        )

    def _describe(self, exc: BaseException) -> RealtimeClientError:
        if isinstance(exc, TimeoutError) and self.connected:
            seconds = 2 * self.group.owner.settings.heartbeat_interval
            return RealtimeClientError(f"no data for {seconds:g} s (two heartbeat intervals): reconnecting")
        return RealtimeClientError(f"cannot reach {self.group.owner.settings.service_url}: {exc}")
