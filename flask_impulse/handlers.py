"""The two requests a broker lives on, a stream and a push, and the answer to a refused
request: the protocol's rules on a plain request object.

The blueprint calls them inside Flask's request cycle; the standalone service's hot path
(``server.hotpath``) calls them without it, for the cost of a push. Both see the same rules,
answers and errors. They need an application context (``current_app``, ``g``), not a
request context: the request is an argument.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator, Sequence
from typing import Any

from flask import Request, current_app
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import get_content_length

from . import _json
from .broker import Connection, Draft, Published
from .broker.message import Framed
from .broker.transport import abort_when_unacknowledged, direct_writes_allowed
from .errors import PushError, Refusal, SubscriptionRefused
from .security.access import Admission
from .security.auth import check_publisher
from .security.redaction import note_request_secrets
from .sse import encode_comment, encode_event, encode_retry
from .state import ImpulseState
from .validation import (
    INVALID_QUERY_PARAMETER,
    PushRequest,
    check_name,
    parse_idempotency_header,
    parse_push_body,
    query_value,
)

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # nginx buffers proxied answers unless told not to; a buffered stream never arrives.
    "X-Accel-Buffering": "no",
}
#: Reading a body the client framed wrongly: gunicorn parses chunks as the view reads them
#: (bad size, bad extension, missing terminator), and a close mid-body is an OSError
#: (gunicorn's NoMoreData, or a reset socket).
_BAD_BODY = (ParseException, OSError)


# -- subscribe ---------------------------------------------------------------------------
def open_stream(state: ImpulseState, request: Request) -> Iterator[bytes] | bytes:
    """The body of a stream: its frames, as long as it lasts; or, from a worker that is
    shutting down, a short body whose ``retry:`` sends the client elsewhere. Raises a
    :class:`Refusal` for a stream that may not open."""
    settings = state.settings
    channels = tuple(dict.fromkeys(c for c in request.args.getlist("channel") if c))
    if not channels:
        raise SubscriptionRefused("channel query parameter is required")
    if len(channels) > settings.max_channels_per_stream:
        raise SubscriptionRefused(
            "Too many channels", f"a stream may subscribe to at most {settings.max_channels_per_stream}"
        )
    with _names_refuse_the_subscription():
        for channel in channels:
            check_name(channel, "the channel query parameter", settings.max_channel_length, INVALID_QUERY_PARAMETER)
        topic = _optional_query(request, "topic", settings.max_topic_length)
        client_id = _optional_query(request, "clientId", settings.max_channel_length)
        last_event_id = request.environ.get("HTTP_LAST_EVENT_ID") or query_value(request, "lastEventId")
        if last_event_id is not None and len(last_event_id) > 64:
            raise SubscriptionRefused("Invalid request", "Last-Event-ID is not an id this service issued")
        if state.broker.draining:
            # Not a 503: EventSource gives up for good on any status but 200, and the
            # official client would never reconnect.
            return encode_retry(settings.retry_ms + random.randint(0, settings.retry_ms))
        # Tokens, grants, quotas and hooks, for every channel, before anything is read.
        admission = state.gatekeeper.admit(channels, topic, request)
    try:
        connection = state.broker.open(channels, topic, admission.audience)
    except BaseException:
        admission.release()
        raise

    try:
        preamble = b"".join(encode_comment(f"Connected to channel: {channel}") for channel in channels)
        preamble += encode_retry(settings.retry_ms)
        replay: Sequence[Framed] = ()
        if last_event_id:
            # The connection is registered before history is read, so nothing published in
            # between is missed; the connection drops live copies of what the replay sent.
            resumed = state.broker.replay(connection, last_event_id)
            if resumed.gap:
                preamble += encode_event(_json.dumps({"lastEventId": last_event_id}), event="gap")
            replay = resumed.messages
        if state.presence.enabled:
            # A hook's subject, or the verified token's; a clientId only outside JWT mode.
            member = admission.member(client_id)
            state.presence.enter(connection, member, watch=query_value(request, "presence") in ("1", "true"))
    except BaseException:
        state.presence.leave(connection)
        state.broker.release(connection)
        admission.release()
        raise
    environ = request.environ
    client_socket = environ.get("gunicorn.socket")
    if client_socket is not None:
        connection.watch_hangup(client_socket)
        abort_when_unacknowledged(client_socket, settings.heartbeat_interval)
        protocol = environ.get("SERVER_PROTOCOL")
        if direct_writes_allowed() and request.method == "GET" and protocol in ("HTTP/1.1", "HTTP/1.0"):
            connection.write_directly(client_socket, chunked=protocol == "HTTP/1.1")
    admission.watch(connection)
    return connection.frames(
        preamble,
        replay,
        settings.heartbeat_interval,
        on_end=_StreamEnd(state, connection, admission),
    )


class _StreamEnd:
    """What a stream gives back when it ends, however it ends: its presence, its place in the
    broker, its quota. An object with slots, not a ``functools.partial``: every open stream
    holds one (130 bytes less)."""

    __slots__ = ("_admission", "_connection", "_state")

    def __init__(self, state: ImpulseState, connection: Connection, admission: Admission) -> None:
        self._state = state
        self._connection = connection
        self._admission = admission

    def __call__(self) -> None:
        self._state.presence.leave(self._connection)
        self._state.broker.release(self._connection)
        self._admission.release()


@contextlib.contextmanager
def _names_refuse_the_subscription() -> Iterator[None]:
    """``check_name`` refuses a bad name as a push body's (``PushError``); in a stream's
    query or token the same answer refuses a subscription."""
    try:
        yield
    except PushError as exc:
        raise SubscriptionRefused(exc.error, exc.details, status=exc.status, headers=exc.headers) from exc


def _optional_query(request: Request, name: str, max_length: int) -> str | None:
    value = query_value(request, name)
    if not value:
        return None
    return check_name(value, f"the {name} query parameter", max_length, INVALID_QUERY_PARAMETER)


# -- publish -----------------------------------------------------------------------------
def push(state: ImpulseState, request: Request) -> dict[str, Any]:
    """Publish what a push request asks, and the JSON it is answered: ``sent`` and ``id``,
    or for a batch ``sent`` and ``results``. Raises a :class:`Refusal` for a push refused
    whole: nothing of it was published."""
    settings = state.settings
    if not settings.secrets and not settings.push_without_secret:
        raise PushError("Push endpoint disabled", "set IMPULSE_SECRET to enable the HTTP push endpoint", status=403)
    publisher = request.remote_addr or ""
    if settings.secrets:
        publisher = check_publisher(request.environ.get("HTTP_AUTHORIZATION"), settings.secrets)
    return publish(state, request, publisher)


def publish(state: ImpulseState, request: Request, publisher: str) -> dict[str, Any]:
    """The push endpoint once its caller is known: the body read, validated, rate-limited as
    ``publisher``, checked by the hooks and published. The console's push form comes here too."""
    settings = state.settings
    body = _read_body(request, settings.max_body_size)
    parsed = _with_header_key(request, parse_push_body(body, settings))
    batch = parsed if isinstance(parsed, list) else [parsed]
    # A hook or the backplane may fail with audience tokens in the error's text.
    note_request_secrets(token for item in batch for token in item.tokens or ())
    if state.push_rate_limiter is not None:
        state.push_rate_limiter.charge(publisher, len(batch))
    state.gatekeeper.check_pushes(batch, request)
    _validate_payloads(state, parsed)
    broker = state.broker
    if isinstance(parsed, list):
        # One call for the whole batch: a shared backplane takes it all or none.
        published = broker.publish_many([_draft(state, item) for item in parsed])
        return {"sent": sum(p.sent for p in published), "results": [_answer(p) for p in published]}
    return _answer(broker.publish(_draft(state, parsed)))


def _answer(published: Published) -> dict[str, Any]:
    """What one push is answered: a duplicate repeats the first answer, and says it is one."""
    if published.duplicate:
        return {"sent": published.sent, "id": published.id, "duplicate": True}
    return {"sent": published.sent, "id": published.id}


def _with_header_key(request: Request, parsed: PushRequest | list[PushRequest]) -> PushRequest | list[PushRequest]:
    """Fold the ``Idempotency-Key`` header into a single push; a batch's items carry their own."""
    # From the environ: a WSGI server joins repeated headers into one value, as getlist would
    # find them, and a missing header is no KeyError raised and caught within werkzeug.
    header = request.environ.get("HTTP_IDEMPOTENCY_KEY")
    key = parse_idempotency_header([] if header is None else [header])
    if key is None:
        return parsed
    if isinstance(parsed, list):
        raise PushError(
            "Invalid idempotency key",
            "the Idempotency-Key header is for a single push: give each item of a batch its own idempotencyKey",
        )
    if parsed.idempotency_key is not None and parsed.idempotency_key != key:
        raise PushError("Invalid idempotency key", "the Idempotency-Key header and idempotencyKey differ: send one key")
    return dataclasses.replace(parsed, idempotency_key=key)


def _validate_payloads(state: ImpulseState, parsed: PushRequest | list[PushRequest]) -> None:
    """Check every payload on a declared channel before any is published: a batch is all or none."""
    if not state.channels or not state.settings.validate_payloads:
        return
    batch = parsed if isinstance(parsed, list) else [parsed]
    for index, item in enumerate(batch):
        declared = state.channels.get(item.channel)
        if declared is None:
            continue
        try:
            declared.validate(item.payload)
        except PushError as exc:
            if isinstance(parsed, list):
                raise PushError(exc.error, f"[{index}]: {exc.details}") from exc
            raise


def _draft(state: ImpulseState, push_request: PushRequest) -> Draft:
    return state.broker.draft(
        push_request.channel,
        push_request.payload,
        push_request.tokens,
        push_request.topic,
        push_request.idempotency_key,
    )


def _read_body(request: Request, limit: int) -> bytes:
    # From the environ, as werkzeug reads it, not through request.content_length: its header
    # look-ups cost a tenth of a push.
    length = get_content_length(request.environ)
    if length is not None and length > limit:
        raise PushError("Payload too large", f"the body may hold at most {limit} bytes", status=413)
    try:
        body = request.stream.read(limit + 1)
    except _BAD_BODY as exc:
        # The client's mistake, not ours: no traceback. The exception's text may quote the
        # body's bytes, so only its kind is logged and answered.
        current_app.logger.warning("Malformed request body from ip=%s: %s", request.remote_addr, type(exc).__name__)
        raise PushError("Malformed request body", f"the body's framing is invalid ({type(exc).__name__})") from None
    if len(body) > limit:
        raise PushError("Payload too large", f"the body may hold at most {limit} bytes", status=413)
    return body


# -- every request -----------------------------------------------------------------------
def check_query_length(state: ImpulseState, request: Request) -> None:
    """Our own limit, below gunicorn's 8190-byte request line, so that the answer is JSON."""
    limit = state.gatekeeper.settings.max_query_length
    if len(request.query_string) > limit:
        raise Refusal("Query string too long", f"a query string may hold at most {limit} bytes", status=414)


def as_refusal(exc: Exception, request: Request | None) -> Refusal:
    """The one error path: what any failure of a request is answered. A refusal is answered
    as it says, and logged as the client's mistake, without a traceback; Flask's own (a 404
    or 405 outside the blueprint) keep their status and name; anything else is a bug of
    ours, logged with its traceback, and a 500."""
    if isinstance(exc, HTTPException):
        refusal = Refusal(exc.name, status=exc.code or 500)
    elif isinstance(exc, Refusal):
        refusal = exc
    else:
        current_app.logger.exception("Unhandled error in flask-impulse")
        return Refusal("Internal server error", status=500)
    if request is not None:
        current_app.logger.warning(
            "Refused %s %s from ip=%s: %s %s",
            request.method,
            ascii(request.path),  # quoted and escaped: a path may hold a line break
            request.remote_addr,
            refusal.status,
            refusal.error,
        )
    return refusal
