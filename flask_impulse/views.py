"""The blueprint: the SSE stream, the push endpoint and health, at whatever prefix it is
registered under. Every answer that is not a stream is JSON, errors included."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hmac
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from flask_cors.core import set_cors_headers
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

from . import _json, metrics
from .broker import Connection, Draft, Published
from .broker.transport import abort_when_unacknowledged, direct_writes_allowed
from .errors import PushError, Refusal, SubscriptionRefused
from .readiness import check_delivery
from .security.access import Admission
from .security.auth import check_publisher
from .security.headers import add_security_headers
from .security.redaction import note_request_secrets
from .sse import encode_comment, encode_event, encode_retry
from .state import EXTENSION_KEY, ImpulseState
from .validation import (
    INVALID_QUERY_PARAMETER,
    PushRequest,
    check_name,
    parse_idempotency_header,
    parse_push_body,
)

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # nginx buffers proxied answers unless told not to; a buffered stream never arrives.
    "X-Accel-Buffering": "no",
}
STATIC_DIR = Path(__file__).parent / "static"
#: Reading a body the client framed wrongly: gunicorn parses chunks as the view reads them
#: (bad size, bad extension, missing terminator), and a close mid-body is an OSError
#: (gunicorn's NoMoreData, or a reset socket).
_BAD_BODY = (ParseException, OSError)
_ALL_METHODS = ["GET", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"]


def create_blueprint(name: str = "impulse") -> Blueprint:
    blueprint = Blueprint(name, __name__)
    # Every method reaches the view, so that a 405 is our JSON and not Flask's HTML.
    blueprint.add_url_rule("/", "endpoint", endpoint, methods=_ALL_METHODS, strict_slashes=False)
    blueprint.add_url_rule("/<path:subpath>", "subpath", subpath, methods=_ALL_METHODS)
    blueprint.before_request(_check_query_length)
    blueprint.after_request(_add_cors_headers)
    blueprint.after_request(_add_security_headers)
    blueprint.register_error_handler(Exception, handle_error)
    return blueprint


def _state() -> ImpulseState:
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def endpoint() -> Response:
    if request.method == "GET":
        return stream()
    if request.method == "POST":
        return push()
    if request.method == "OPTIONS":
        return Response(status=204)
    raise Refusal("Method not allowed", status=405)


def subpath(subpath: str) -> Response:
    state = _state()
    path = "/" + subpath
    if path in (state.settings.health_path, state.settings.ready_path):
        if request.method not in ("GET", "HEAD"):
            raise Refusal("Method not allowed", status=405)
        _check_health_token(state)
        return health(state) if path == state.settings.health_path else readiness(state)
    if path == state.settings.metrics_path and request.method in ("GET", "HEAD"):
        _check_health_token(state)
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)
    if path == "/presence" and state.presence.enabled:
        if request.method not in ("GET", "HEAD"):
            raise Refusal("Method not allowed", status=405)
        return presence(state)
    if subpath in BROWSER_CLIENT_FILES and request.method in ("GET", "HEAD"):
        return _browser_client(subpath)
    raise Refusal("Not found", status=404)


#: The browser client, served beside the stream: ``import {createRealtimeClient} from "BASE/client.js"``.
BROWSER_CLIENT_FILES = {"client.js": "text/javascript", "client.d.ts": "application/typescript"}


def _browser_client(filename: str) -> Response:
    # CORS headers come from after_request: the origins allowed to subscribe may load the module.
    return send_from_directory(STATIC_DIR, filename, mimetype=BROWSER_CLIENT_FILES[filename], max_age=300)


# -- subscribe ---------------------------------------------------------------------------
def stream() -> Response:
    state = _state()
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
        topic = _optional_query("topic", settings.max_topic_length)
        client_id = _optional_query("clientId", settings.max_channel_length)
        last_event_id = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
        if last_event_id is not None and len(last_event_id) > 64:
            raise SubscriptionRefused("Invalid request", "Last-Event-ID is not an id this service issued")
        if state.broker.draining:
            return _come_back_later(settings.retry_ms)
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
        replay = []
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
            state.presence.enter(connection, member, watch=request.args.get("presence") in ("1", "true"))
    except BaseException:
        state.presence.leave(connection)
        state.broker.release(connection)
        admission.release()
        raise
    client_socket = request.environ.get("gunicorn.socket")
    if client_socket is not None:
        connection.watch_hangup(client_socket)
        abort_when_unacknowledged(client_socket, settings.heartbeat_interval)
        protocol = request.environ.get("SERVER_PROTOCOL")
        if direct_writes_allowed() and request.method == "GET" and protocol in ("HTTP/1.1", "HTTP/1.0"):
            connection.write_directly(client_socket, chunked=protocol == "HTTP/1.1")
    admission.watch(connection)
    body = connection.frames(
        preamble,
        replay,
        settings.heartbeat_interval,
        on_end=functools.partial(_end_stream, state, connection, admission),
    )
    # Passed through as it is: werkzeug's wrappers would add two generator levels, and a
    # kilobyte of saved stack each, to every idle stream.
    return Response(body, status=200, headers=STREAM_HEADERS, direct_passthrough=True)


def _end_stream(state: ImpulseState, connection: Connection, admission: Admission) -> None:
    state.presence.leave(connection)
    state.broker.release(connection)
    admission.release()


def _come_back_later(retry_ms: int) -> Response:
    """A stream asked of a worker that is shutting down: an empty stream whose ``retry:``
    sends the client elsewhere. Not a 503: EventSource gives up for good on any status but
    200, and the official client would never reconnect."""
    return Response(encode_retry(retry_ms + random.randint(0, retry_ms)), status=200, headers=STREAM_HEADERS)


@contextlib.contextmanager
def _names_refuse_the_subscription() -> Iterator[None]:
    """``check_name`` refuses a bad name as a push body's (``PushError``); in a stream's
    query or token the same answer refuses a subscription."""
    try:
        yield
    except PushError as exc:
        raise SubscriptionRefused(exc.error, exc.details, status=exc.status, headers=exc.headers) from exc


def _optional_query(name: str, max_length: int) -> str | None:
    value = request.args.get(name)
    if not value:
        return None
    return check_name(value, f"the {name} query parameter", max_length, INVALID_QUERY_PARAMETER)


# -- publish -----------------------------------------------------------------------------
def push() -> Response:
    state = _state()
    settings = state.settings
    if not settings.secrets and not settings.push_without_secret:
        raise PushError("Push endpoint disabled", "set IMPULSE_SECRET to enable the HTTP push endpoint", status=403)
    publisher = request.remote_addr or ""
    if settings.secrets:
        publisher = check_publisher(request.headers.get("Authorization"), settings.secrets)
    return publish_request_body(state, publisher)


def publish_request_body(state: ImpulseState, publisher: str) -> Response:
    """The push endpoint once its caller is known: the body read, validated, rate-limited as
    ``publisher``, checked by the hooks and published. The console's push form comes here too."""
    settings = state.settings
    body = _read_body(settings.max_body_size)
    parsed = _with_header_key(parse_push_body(body, settings))
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
        results = [_answer(p) for p in published]
        return jsonify({"sent": sum(p.sent for p in published), "results": results})
    return jsonify(_answer(broker.publish(_draft(state, parsed))))


def _answer(published: Published) -> dict[str, Any]:
    """What one push is answered: a duplicate repeats the first answer, and says it is one."""
    if published.duplicate:
        return {"sent": published.sent, "id": published.id, "duplicate": True}
    return {"sent": published.sent, "id": published.id}


def _with_header_key(parsed: PushRequest | list[PushRequest]) -> PushRequest | list[PushRequest]:
    """Fold the ``Idempotency-Key`` header into a single push; a batch's items carry their own."""
    key = parse_idempotency_header(request.headers.getlist("Idempotency-Key"))
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


def _read_body(limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
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


# -- presence ----------------------------------------------------------------------------
def presence(state: ImpulseState) -> Response:
    """Who is on a presence channel; guarded as the push endpoint is, since members are
    identities the subscribers did not choose to publish."""
    settings = state.settings
    if not settings.secrets and not settings.push_without_secret:
        raise Refusal("Presence endpoint disabled", "set IMPULSE_SECRET to enable it", status=403)
    if settings.secrets:
        check_publisher(request.headers.get("Authorization"), settings.secrets)
    channel = request.args.get("channel") or ""
    check_name(channel, "the channel query parameter", settings.max_channel_length, INVALID_QUERY_PARAMETER)
    return jsonify(state.presence.snapshot(channel))


# -- health ------------------------------------------------------------------------------
def _check_health_token(state: ImpulseState) -> None:
    expected = state.settings.health_token
    if expected is not None:
        # ?token= or a Bearer credential, as documented; a bare "Authorization: <token>" is
        # no credential scheme, and accepting it would teach clients to send one.
        presented = request.args.get("token") or ""
        authorization = request.headers.get("Authorization", "")
        if not presented and authorization.startswith("Bearer "):
            presented = authorization[len("Bearer ") :]
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise Refusal("Health check token required", status=401)


def health(state: ImpulseState) -> Response:
    """Liveness: cheap, touches nothing but counters."""
    return jsonify(
        {
            "status": "ok",
            "uptime": round(time.time() - state.broker.started, 3),
            # The instance's, across its gunicorn workers: what an operator means by it.
            # Each worker's own figure is in the metrics (impulse_connections).
            "connections": state.broker.instance_connections(),
        }
    )


def readiness(state: ImpulseState) -> Response:
    """Readiness: a push to a private channel must come back through a real connection."""
    if state.broker.draining:
        raise Refusal("Not ready", "the service is shutting down", status=503, headers={"Retry-After": "1"})
    problem = check_delivery(state.broker)
    if problem is not None:
        raise Refusal("Not ready", problem, status=503, headers={"Retry-After": "1"})
    return jsonify({"status": "ready", "connections": len(state.broker.connections)})


# -- every answer --------------------------------------------------------------------------
def _check_query_length() -> None:
    """Our own limit, below gunicorn's 8190-byte request line, so that the answer is JSON."""
    limit = _state().gatekeeper.settings.max_query_length
    if len(request.query_string) > limit:
        raise Refusal("Query string too long", f"a query string may hold at most {limit} bytes", status=414)


def _add_cors_headers(response: Response) -> Response:
    options = _state().cors_options
    set_cors_headers(response, options)
    if request.method == "OPTIONS" and response.headers.get("Access-Control-Allow-Origin"):
        # The reference answers every OPTIONS as a preflight, asked for or not.
        response.headers.setdefault("Access-Control-Allow-Headers", "Authorization, Content-Type")
        response.headers.setdefault("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
    return response


def _add_security_headers(response: Response) -> Response:
    if _state().settings.security_headers:
        add_security_headers(response.headers)
    return response


def handle_error(exc: Exception) -> Response:
    """The one error handler, of the blueprint and of the standalone service: a refusal is
    answered as it says; Flask's own (a 404 or 405 outside the blueprint) keep their status
    and name; anything else is a bug of ours, logged with its traceback, and a JSON 500."""
    if isinstance(exc, HTTPException):
        exc = Refusal(exc.name, status=exc.code or 500)
    elif not isinstance(exc, Refusal):
        current_app.logger.exception("Unhandled error in flask-impulse")
        exc = Refusal("Internal server error", status=500)
    return refusal_response(exc)


def refusal_response(refusal: Refusal) -> Response:
    """The JSON answer to a refused request, with every field and header the refusal carries."""
    response = jsonify(refusal.to_json())
    response.status_code = refusal.status
    response.headers.update(refusal.headers)
    return response
