"""The subscriber: ``RealtimeClient`` and the ``EventStream`` iterator it hands out. No Flask,
no gevent: it runs in a script, a worker or a device; its streams live in ``groups``."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload
from urllib.parse import urlsplit

from ..channels import Channel, Event
from ..errors import RealtimeClientError
from .groups import ConnectionState, Group, Handler, Owner, PresenceHandler, Subscription
from .tls import Verify, ssl_context

T = TypeVar("T")

_STATE_ORDER: dict[str, int] = {"disconnected": 0, "connecting": 1, "connected": 2}
#: One logger for every client of the package, whichever module logs.
_LOG = logging.getLogger("flask_impulse.client")


class RealtimeClient:
    """Subscribe to channels from Python: a script, a worker, an IoT device.

    ::

        with RealtimeClient("http://localhost:8080") as client:
            client.subscribe(chat_message, lambda event: print(event.payload["text"]), topic="room-1")
            for event in client.stream("system:status"):
                ...

    Subscriptions that share a token and a topic share ONE stream (``?channel=a&channel=b``);
    when that set of channels changes the stream is replaced by a new one, opened before the
    old one is closed, so that nothing is lost in between. A dropped stream reconnects with
    exponential backoff and jitter and resumes with ``Last-Event-ID``: nothing published in
    the meantime is lost while the server's history holds it. A stream that stays silent for
    two heartbeat intervals is taken for dead and reconnected.

    Handlers run on the stream's reader thread (a greenlet under gevent's monkey-patching), one
    message at a time and in order; a handler that raises is reported through ``on_error``.
    ``heartbeat_interval`` must match the server's (``IMPULSE_HEARTBEAT_INTERVAL``, 30 s).
    """

    def __init__(
        self,
        service_url: str,
        retry_attempts: int = 5,
        retry_delay: float = 1.0,
        heartbeat_interval: float = 30.0,
        debug: bool = False,
        *,
        max_retry_delay: float = 30.0,
        connect_timeout: float = 10.0,
        verify: Verify = True,
    ) -> None:
        parts = urlsplit(service_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"service_url must be an http(s) URL, not {service_url!r}")
        if retry_attempts < 0 or retry_delay < 0 or heartbeat_interval <= 0:
            raise ValueError("retry_attempts and retry_delay must not be negative, heartbeat_interval must be positive")
        self.service_url = service_url
        self.retry_attempts = retry_attempts
        self.retry_delay = retry_delay
        self.heartbeat_interval = heartbeat_interval
        self.max_retry_delay = max_retry_delay
        self.connect_timeout = connect_timeout
        #: For ``https://`` streams: ``verify`` (a CA bundle path, True or False) as requests reads it.
        self.ssl_context = ssl_context(verify)
        self.debug = debug
        if debug and _LOG.level in (logging.NOTSET, logging.WARNING) and not _LOG.handlers:
            _LOG.setLevel(logging.DEBUG)
            _LOG.addHandler(logging.StreamHandler())
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._groups: dict[tuple[str | None, str | None], Group] = {}
        self._state_callbacks: list[Callable[[ConnectionState], object]] = []
        self._error_callbacks: list[Callable[[Exception], object]] = []
        self._streams: list[EventStream[Any]] = []
        self._state: ConnectionState = "disconnected"
        self._closed = False
        self.messages_received = 0
        self.reconnects = 0
        self._owner = Owner(self, self._lock, self._report, self._update_state, self._received, self._reconnected)

    # -- subscriptions ----------------------------------------------------------------------
    @overload
    def subscribe(
        self, channel: Channel[T], handler: Handler[T], token: str | None = None, topic: str | None = None
    ) -> Callable[[], None]: ...
    @overload
    def subscribe(
        self, channel: str, handler: Handler[Any], token: str | None = None, topic: str | None = None
    ) -> Callable[[], None]: ...
    def subscribe(
        self, channel: Channel[Any] | str, handler: Handler[Any], token: str | None = None, topic: str | None = None
    ) -> Callable[[], None]:
        """Call ``handler(event)`` for each message on ``channel`` (``event.payload`` typed by a
        :class:`Channel`); return the function that unsubscribes this handler."""
        return self._add(channel, handler, token, topic, presence=False)

    def _add(
        self,
        channel: Channel[Any] | str,
        handler: Handler[Any] | PresenceHandler,
        token: str | None,
        topic: str | None,
        *,
        presence: bool,
    ) -> Callable[[], None]:
        name = channel.name if isinstance(channel, Channel) else channel
        if not isinstance(name, str) or not name:
            raise ValueError("channel is required and must be a non-empty string")
        if not callable(handler):
            raise TypeError("handler must be callable")
        decode = channel.decode if isinstance(channel, Channel) else _identity
        subscription = Subscription(name, handler, decode, presence)
        key = (token or None, topic or None)
        with self._lock:
            if self._closed:
                raise RuntimeError("this RealtimeClient is closed")
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = Group(self._owner, token or None, topic or None)
            group.add(subscription)
        return lambda: self._remove(key, subscription)

    def on_presence(
        self, channel: Channel[Any] | str, handler: PresenceHandler, token: str | None = None, topic: str | None = None
    ) -> Callable[[], None]:
        """Call ``handler(PresenceEvent(channel, member, action))`` when a member joins or
        leaves ``channel``, a presence channel of the server (``IMPULSE_PRESENCE_CHANNELS``):
        the stream of ``token`` and ``topic`` then asks for them (``?presence=1``). Messages
        still go to :meth:`subscribe`'s handlers only. Returns the function that removes it."""
        return self._add(channel, handler, token, topic, presence=True)

    def stream(
        self,
        channel: Channel[T] | str,
        token: str | None = None,
        topic: str | None = None,
        *,
        timeout: float | None = None,
    ) -> EventStream[T]:
        """The messages on ``channel`` as an iterator: ``for event in client.stream("x"): ...``.

        It subscribes at once (not at the first ``next``), ends when the client closes, and
        unsubscribes when closed or left (it is a context manager). With ``timeout``, waiting
        longer than that for a message raises ``TimeoutError``.
        """
        events: EventStream[T] = EventStream(timeout)
        with self._lock:
            self._streams.append(events)
        events._unsubscribe = self.subscribe(channel, events._put, token, topic)
        return events

    def unsubscribe_all(self, channel: Channel[Any] | str) -> None:
        """Remove every handler of ``channel``, whatever token or topic it was subscribed with."""
        name = channel.name if isinstance(channel, Channel) else channel
        with self._lock:
            emptied = []
            for key, group in list(self._groups.items()):
                group.remove_channel(name)
                emptied += self._forget_if_empty(key, group)
        self._close_groups(emptied)

    def unsubscribe_all_channels(self) -> None:
        """Remove every subscription and close every stream; the client stays usable."""
        with self._lock:
            groups = list(self._groups.values())
            self._groups.clear()
        self._close_groups(groups)

    def close(self) -> None:
        """Close every stream and end every ``stream()`` iterator. Safe to call twice."""
        with self._lock:
            self._closed = True
            streams = list(self._streams)
            self._streams.clear()
        self.unsubscribe_all_channels()
        for events in streams:
            events._put(_END)

    def _remove(self, key: tuple[str | None, str | None], subscription: Subscription) -> None:
        with self._lock:
            group = self._groups.get(key)
            emptied = []
            if group is not None:
                group.remove(subscription)
                emptied = self._forget_if_empty(key, group)
        self._close_groups(emptied)

    def _forget_if_empty(self, key: tuple[str | None, str | None], group: Group) -> list[Group]:
        if not group.empty:
            return []
        del self._groups[key]
        return [group]

    def _close_groups(self, groups: list[Group]) -> None:
        # Outside the client's lock: closing waits for the group's supervisor thread, which
        # takes that lock to report its state.
        for group in groups:
            group.close()
        self._update_state()

    # -- callbacks and state ----------------------------------------------------------------
    def on_connection_state(self, callback: Callable[[ConnectionState], object]) -> Callable[[], None]:
        """Call ``callback(state)`` on each change: ``connecting``, ``connected`` (every stream
        is open) or ``disconnected``. Returns the function that removes the callback."""
        with self._lock:
            self._state_callbacks.append(callback)
        return lambda: self._discard(self._state_callbacks, callback)

    def on_error(self, callback: Callable[[Exception], object]) -> Callable[[], None]:
        """Call ``callback(error)`` for each failed connection attempt, message that cannot be
        read and handler that raised. A :class:`RealtimeClientError` with ``final`` set means
        the client gave up on a stream; :class:`MissedMessages`, that history ran out."""
        with self._lock:
            self._error_callbacks.append(callback)
        return lambda: self._discard(self._error_callbacks, callback)

    def _discard(self, callbacks: list[Any], callback: object) -> None:
        with self._lock:
            if callback in callbacks:
                callbacks.remove(callback)

    @property
    def state(self) -> ConnectionState:
        return self._state

    def wait_until_connected(self, timeout: float | None = None) -> bool:
        """Block until every subscription is live on an open stream; False on timeout.

        Subscribing is asynchronous: a message pushed before its stream opened is not
        delivered, so a script that subscribes and then triggers pushes waits here first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not (self._groups and all(group.live for group in self._groups.values())):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def get_stats(self) -> dict[str, Any]:
        """Figures for monitoring: state, subscriptions (handlers), channels, open connections,
        messages received, reconnects, and the last message id."""
        with self._lock:
            groups = list(self._groups.values())
            return {
                "state": self._state,
                "subscriptions": sum(group.handler_count for group in groups),
                "channels": sum(len(group.channels) for group in groups),
                "connections": sum(group.open_streams for group in groups),
                "messages": self.messages_received,
                "reconnects": self.reconnects,
                "last_event_id": max((group.last_event_id for group in groups), default="") or None,
            }

    def _update_state(self) -> None:
        with self._lock:
            states = [group.state for group in self._groups.values()]
            state: ConnectionState = min(states, key=_STATE_ORDER.__getitem__) if states else "disconnected"
            self._changed.notify_all()
            if state == self._state:
                return
            self._state = state
            _LOG.debug("connection state: %s", state)
            for callback in list(self._state_callbacks):
                try:
                    callback(state)
                except Exception:
                    _LOG.exception("error in a connection state callback")

    def _received(self) -> None:
        with self._lock:
            self.messages_received += 1

    def _reconnected(self) -> None:
        # Under the lock, as get_stats() reads it: a group's supervisor thread counts here.
        with self._lock:
            self.reconnects += 1

    def _report(self, error: Exception) -> None:
        _LOG.debug("realtime error: %s", error)
        with self._lock:
            callbacks = list(self._error_callbacks)
        for callback in callbacks:
            try:
                callback(error)
            except Exception:
                _LOG.exception("error in an on_error callback")
        if not callbacks and isinstance(error, RealtimeClientError) and error.final:
            _LOG.warning("%s", error)

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> RealtimeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventStream(Generic[T]):
    """The iterator :meth:`RealtimeClient.stream` returns."""

    def __init__(self, timeout: float | None) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._timeout = timeout
        self._unsubscribe: Callable[[], None] | None = None
        self._ended = False

    def _put(self, item: Any) -> None:
        self._queue.put(item)

    def __iter__(self) -> EventStream[T]:
        return self

    def __next__(self) -> Event[T]:
        if self._ended:
            raise StopIteration
        try:
            item = self._queue.get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError(f"no message within {self._timeout} s") from None
        if item is _END:
            self.close()
            raise StopIteration
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._ended = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def __enter__(self) -> EventStream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_END = object()


def _identity(payload: Any) -> Any:
    return payload
