"""Clients of the service. No Flask here: a script or a serverless function imports these
with ``requests`` alone."""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import queue
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload
from urllib.parse import urlencode, urlsplit

import requests

from .. import _json
from ..channels import Channel, Event, Push, Tokens
from ..errors import MissedMessages, RealtimeClientError, ServerClientError
from ..sse import ServerSentEvent, SSEDecoder
from ..validation import check_idempotency_key

T = TypeVar("T")

P = ParamSpec("P")


def _audience(tokens: str | Iterable[str] | None, topic: str | None) -> dict[str, Any] | None:
    audience: dict[str, Any] = {}
    if tokens is not None:
        audience["tokens"] = tokens if isinstance(tokens, str) else list(tokens)
    if topic is not None:
        audience["topic"] = topic
    return audience or None


def _push_body(message: Push[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": message.channel, "payload": message.payload}
    audience = _audience(message.tokens, message.topic)
    if audience:
        body["audience"] = audience
    return body


def _batch_item(event: Push[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """One push object of a batch, with its own idempotency key (a fresh one unless given)."""
    if isinstance(event, Push):
        body, key = _push_body(event), event.idempotency_key
    else:
        body = {"channel": event["channel"], "payload": event.get("payload")}
        audience = event.get("audience") or _audience(event.get("tokens"), event.get("topic"))
        if audience:
            body["audience"] = audience
        key = event.get("idempotency_key", event.get("idempotencyKey"))
    body["idempotencyKey"] = _key(key)
    return body


def _key(given: str | None) -> str:
    """The idempotency key of one push: the caller's, checked here so that a bad one fails with
    the rule rather than as a transport error, or a fresh one."""
    return check_idempotency_key(given, "idempotency_key") if given is not None else str(uuid.uuid4())


def _quoted(key: str) -> str:
    """``key`` as the structured-field string of the IETF draft's header: a key holding a comma
    or a quote then reaches the service whole (a bare comma reads as two headers)."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class PushResult:
    """The service's answer to one push."""

    #: The message id (empty from a server that issues none).
    id: str
    #: The connections the message was written to; for a duplicate, as counted the first time.
    sent: int
    #: True when the service had already accepted this idempotency key: nothing was delivered
    #: now, and ``id`` and ``sent`` are the first push's (a retry of a push that got through).
    duplicate: bool = False

    @classmethod
    def from_json(cls, answer: Mapping[str, Any]) -> PushResult:
        return cls(str(answer.get("id", "")), int(answer["sent"]), answer.get("duplicate") is True)


#: Answers retried under the same idempotency key: the service's own "retry later" (503), and a
#: proxy's word that it lost the upstream (502, 504), when the push may or may not have run.
RETRIED_STATUSES = frozenset({502, 503, 504})
#: Transport failures retried: the push may not have arrived, or its answer may have been lost.
_RETRIED_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class ServerClient:
    """Push over HTTP, the Python twin of the official ``createServerClient``.

    ::

        with ServerClient("http://localhost:8080", token=os.environ["REALTIME_SECRET"]) as client:
            client.push("chat:message", {"text": "hi"}, topic="room-42")

    Every push carries an idempotency key, a fresh UUID unless the caller gives one, so a push
    whose outcome is unknown (a connection error, a timeout, a ``502``/``503``/``504``) is retried
    under the same key and delivered at most once: up to ``max_attempts`` attempts in all,
    none started later than ``retry_deadline`` seconds after the first, waiting
    ``backoff * 2**(n-1)`` (at most ``max_backoff``, jittered between half of it and all of it, or
    the answer's ``Retry-After`` up to ``max_backoff``) in between. A ``4xx`` is never retried.
    """

    def __init__(
        self,
        service_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        retry_deadline: float = 30.0,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        if max_attempts < 1 or retry_deadline < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("max_attempts must be at least 1; retry_deadline, backoff and max_backoff not negative")
        self.service_url = service_url
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_deadline = retry_deadline
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: Attempts made after a first one failed, since this client was created.
        self.retries = 0
        self._session = requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    @overload
    def push(
        self,
        channel: str,
        payload: Any,
        tokens: Tokens = None,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> int: ...
    @overload
    def push(self, channel: Callable[P, Push[Any]], *args: P.args, **kwargs: P.kwargs) -> int: ...
    def push(self, channel: str | Callable[..., Push[Any]], *args: Any, **kwargs: Any) -> int:
        """Publish one message; return how many connections it was written to.

        ``channel`` is a name, or a :class:`~flask_impulse.Channel` whose payload type mypy checks.
        ``idempotency_key`` (a fresh UUID when not given) makes a repeat within the service's
        ``IMPULSE_IDEMPOTENCY_TTL`` deliver nothing; :meth:`publish` tells whether it was one.
        """
        return self.publish(channel, *args, **kwargs).sent

    @overload
    def publish(
        self,
        channel: str,
        payload: Any,
        tokens: Tokens = None,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> PushResult: ...
    @overload
    def publish(self, channel: Callable[P, Push[Any]], *args: P.args, **kwargs: P.kwargs) -> PushResult: ...
    def publish(self, channel: str | Callable[..., Push[Any]], *args: Any, **kwargs: Any) -> PushResult:
        """Like :meth:`push`, but return the whole answer: the message id, and ``duplicate``."""
        message = Push(channel, *args, **kwargs) if isinstance(channel, str) else channel(*args, **kwargs)
        key = _key(message.idempotency_key)
        return PushResult.from_json(self._post(_push_body(message), {"Idempotency-Key": _quoted(key)}))

    def push_many(self, events: Iterable[Push[Any] | Mapping[str, Any]]) -> list[int]:
        """Publish several messages in one request; return what each was written to.

        Each event is a :class:`~flask_impulse.Push` (what calling a typed channel returns:
        ``chat_message(payload, topic="room-1")``), or a mapping with ``channel``, ``payload`` and
        optionally ``tokens`` and ``topic`` (or an ``audience`` object, as the official client takes
        it) and ``idempotency_key``. Each event gets its own key, a fresh one unless given.
        """
        return [result.sent for result in self.publish_many(events)]

    def publish_many(self, events: Iterable[Push[Any] | Mapping[str, Any]]) -> list[PushResult]:
        """Like :meth:`push_many`, but return each answer whole (id, sent, duplicate)."""
        batch = [_batch_item(event) for event in events]
        if not batch:
            return []
        return [PushResult.from_json(result) for result in self._post(batch)["results"]]

    def _post(self, body: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """POST ``body``, retrying what may not have gone through; the idempotency keys in
        ``body`` and ``headers`` make every attempt the same push."""
        data = _json.dumps(body)  # ours, not requests': it writes dataclass payloads and refuses NaN
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                response = self._session.post(self.service_url, data=data, headers=headers, timeout=self.timeout)
            except requests.exceptions.SSLError as exc:  # a certificate does not mend itself
                raise ServerClientError(0, f"cannot reach {self.service_url}: {exc}") from exc
            except _RETRIED_ERRORS as exc:
                failure = ServerClientError(0, f"cannot reach {self.service_url}: {exc}")
                failure.__cause__ = exc
            except requests.RequestException as exc:  # a bad URL, say: retrying cannot help
                raise ServerClientError(0, f"cannot reach {self.service_url}: {exc}") from exc
            else:
                if response.status_code not in RETRIED_STATUSES:
                    return _answer(response)
                failure = _refusal(response)
                retry_after = _retry_after(response.headers.get("Retry-After"))
            delay = self._delay(attempt, retry_after)
            if attempt >= self.max_attempts or time.monotonic() + delay - started > self.retry_deadline:
                raise failure
            self.retries += 1
            _LOG.info("push failed (%s); retry %d in %.2f s under the same idempotency key", failure, attempt, delay)
            time.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, so that publishers who failed together come back apart;
        the service's ``Retry-After`` when it asks for longer, up to ``max_backoff`` still."""
        backoff = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after is None:
            return backoff
        return max(backoff, min(retry_after, self.max_backoff))

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _answer(response: requests.Response) -> dict[str, Any]:
    if not response.ok:
        raise _refusal(response)
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    return answer  # type: ignore[no-any-return]


def _refusal(response: requests.Response) -> ServerClientError:
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    error = answer.get("error") if isinstance(answer, dict) else None
    details = answer.get("details") if isinstance(answer, dict) else None
    return ServerClientError(response.status_code, error or response.reason or "error", details)


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


# -- subscribing -------------------------------------------------------------------------------
ConnectionState = Literal["connecting", "connected", "disconnected"]
Handler = Callable[[Event[T]], object]
_STATE_ORDER: dict[str, int] = {"disconnected": 0, "connecting": 1, "connected": 2}
_LOG = logging.getLogger("flask_impulse.client")
#: How long a replaced stream keeps being read after its successor opened, so that a message
#: already on its way through the old one is not cut off (duplicates are dropped by id).
SWITCH_GRACE = 1.0
#: Message ids remembered per group to drop the copies two overlapping streams deliver.
_RECENT_IDS = 2048


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
        self.debug = debug
        if debug and _LOG.level in (logging.NOTSET, logging.WARNING) and not _LOG.handlers:
            _LOG.setLevel(logging.DEBUG)
            _LOG.addHandler(logging.StreamHandler())
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._groups: dict[tuple[str | None, str | None], _Group] = {}
        self._state_callbacks: list[Callable[[ConnectionState], object]] = []
        self._error_callbacks: list[Callable[[Exception], object]] = []
        self._streams: list[EventStream[Any]] = []
        self._state: ConnectionState = "disconnected"
        self._closed = False
        self.messages_received = 0
        self.reconnects = 0

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
        name = channel.name if isinstance(channel, Channel) else channel
        if not isinstance(name, str) or not name:
            raise ValueError("channel is required and must be a non-empty string")
        if not callable(handler):
            raise TypeError("handler must be callable")
        decode = channel.decode if isinstance(channel, Channel) else _identity
        subscription = _Subscription(name, handler, decode)
        key = (token or None, topic or None)
        with self._lock:
            if self._closed:
                raise RuntimeError("this RealtimeClient is closed")
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(self, token or None, topic or None)
            group.add(subscription)
        return lambda: self._remove(key, subscription)

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

    def _remove(self, key: tuple[str | None, str | None], subscription: _Subscription) -> None:
        with self._lock:
            group = self._groups.get(key)
            emptied = []
            if group is not None:
                group.remove(subscription)
                emptied = self._forget_if_empty(key, group)
        self._close_groups(emptied)

    def _forget_if_empty(self, key: tuple[str | None, str | None], group: _Group) -> list[_Group]:
        if not group.empty:
            return []
        del self._groups[key]
        return [group]

    def _close_groups(self, groups: list[_Group]) -> None:
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


@dataclass(eq=False)
class _Subscription:
    channel: str
    handler: Handler[Any]
    decode: Callable[[Any], Any]


class _Group:
    """The subscriptions that share a token and a topic, and the one stream they share.

    A supervisor thread owns the stream's life: it opens it, replaces it when the channel set
    changes, and reconnects it with backoff when it drops. Each stream reads on its own thread.
    """

    def __init__(self, client: RealtimeClient, token: str | None, topic: str | None) -> None:
        self.client = client
        self.token = token
        self.topic = topic
        self.subscriptions: dict[str, list[_Subscription]] = {}
        self.state: ConnectionState = "connecting"
        self.last_event_id = ""
        self._wake = threading.Condition(threading.Lock())
        self._dirty = True
        self._closed = False
        self._current: _Stream | None = None
        self._streams: set[_Stream] = set()
        self._dispatching = threading.Lock()
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()
        self._live_channels: frozenset[str] = frozenset()
        self._supervisor: threading.Thread | None = None

    # -- called under the client's lock --------------------------------------------------------
    def add(self, subscription: _Subscription) -> None:
        handlers = self.subscriptions.setdefault(subscription.channel, [])
        handlers.append(subscription)
        if len(handlers) == 1:
            self._changed()

    def remove(self, subscription: _Subscription) -> None:
        handlers = self.subscriptions.get(subscription.channel)
        if handlers and subscription in handlers:
            handlers.remove(subscription)
            if not handlers:
                del self.subscriptions[subscription.channel]
                self._changed()

    def remove_channel(self, channel: str) -> None:
        if self.subscriptions.pop(channel, None):
            self._changed()

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
        return self.state == "connected" and set(self.subscriptions) <= self._live_channels

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
            supervisor.join(self.client.connect_timeout + 5)
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
                with self.client._lock:
                    channels = self.channels
                if not channels:
                    return
                if current is not None and not current.ended:
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
                        self.client._report(error)
                    if retries >= self.client.retry_attempts:
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
                    self.client.reconnects += 1
                self._set_state("connecting")
                stream = self._open(channels, self.last_event_id)
                if stream.connected:
                    retries = 0
                    self._live_channels = frozenset(channels)
                    self._set_state("connected")
        finally:
            for stream in list(self._streams):
                stream.close()
            self._current = None

    def _open(self, channels: tuple[str, ...], last_event_id: str) -> _Stream:
        stream = _Stream(self, channels, last_event_id)
        self._streams.add(stream)
        self._current = stream
        stream.start()
        stream.wait_opened()
        return stream

    def _switch(self, old: _Stream, channels: tuple[str, ...]) -> bool:
        """Replace ``old`` with a stream on ``channels``, opening the new one first."""
        _LOG.debug("switching stream to channels %s", channels)
        new = self._open(channels, "")
        if not new.connected:
            old.close()
            return False
        self._live_channels = frozenset(channels)
        self._set_state("connected")
        timer = threading.Timer(min(SWITCH_GRACE, self.client.heartbeat_interval), old.close)
        timer.daemon = True
        timer.start()
        return True

    def _backoff(self, retries: int, previous: _Stream) -> float:
        if previous.retry_after is not None:
            return previous.retry_after
        base = min(self.client.max_retry_delay, self.client.retry_delay * 2.0 ** (retries - 1))
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
        self.client._report(error)
        self._set_state("disconnected")

    def _set_state(self, state: ConnectionState) -> None:
        self.state = state
        self.client._update_state()

    def stream_ended(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        with self._wake:
            self._wake.notify_all()
        self.client._update_state()

    # -- reader threads ------------------------------------------------------------------------
    def dispatch(self, event: ServerSentEvent) -> None:
        if event.event == "gap":
            self.client._report(MissedMessages("the server's history no longer holds every missed message"))
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
                self.client._report(RealtimeClientError(f"unreadable message {event.data[:200]!r}: {exc}"))
                return
            with self.client._lock:
                subscriptions = list(self.subscriptions.get(channel, ()))
                self.client.messages_received += 1
            for subscription in subscriptions:
                try:
                    payload = subscription.decode(data.get("payload"))
                    subscription.handler(Event(channel, payload, event.id, self.topic))
                except Exception as exc:
                    self.client._report(exc)

    def _remember(self, event_id: str) -> None:
        self._recent.append(event_id)
        self._recent_set.add(event_id)
        if len(self._recent) > _RECENT_IDS:
            self._recent_set.discard(self._recent.popleft())


class _Stream:
    """One HTTP stream, read on its own thread with a socket timeout of two heartbeats."""

    def __init__(self, group: _Group, channels: tuple[str, ...], last_event_id: str) -> None:
        self.group = group
        self.channels = channels
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
        client = self.group.client
        try:
            response = self._connect()
            if response is not None:
                self.connected = True
                self._opened.set()
                client._update_state()
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
        client = self.group.client
        parts = urlsplit(client.service_url)
        query = [("channel", channel) for channel in self.channels]
        if self.group.token:
            query.append(("token", self.group.token))
        if self.group.topic:
            query.append(("topic", self.group.topic))
        target = (parts.path or "/") + "?" + urlencode(query)
        factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = factory(parts.hostname or "", parts.port, timeout=client.connect_timeout)
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
            self._sock.settimeout(2 * client.heartbeat_interval)
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
                self.group.dispatch(event)

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
            seconds = 2 * self.group.client.heartbeat_interval
            return RealtimeClientError(f"no data for {seconds:g} s (two heartbeat intervals): reconnecting")
        return RealtimeClientError(f"cannot reach {self.group.client.service_url}: {exc}")
