"""The blueprint: the SSE stream, the push endpoint and health, at whatever prefix it is
registered under. Every answer that is not a stream is JSON, errors included."""

from __future__ import annotations

import hmac
import time
from pathlib import Path

from flask import Blueprint, Request, Response, current_app, jsonify, request, send_from_directory
from flask_cors.core import set_cors_headers

from . import handlers, metrics
from .errors import Refusal
from .handlers import STREAM_HEADERS
from .readiness import check_delivery
from .security.auth import check_publisher
from .security.headers import add_security_headers
from .state import EXTENSION_KEY, ImpulseState
from .validation import INVALID_QUERY_PARAMETER, check_name

STATIC_DIR = Path(__file__).parent / "static"
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


# -- subscribe and publish -------------------------------------------------------------------
def stream() -> Response:
    body = handlers.open_stream(_state(), _request())
    # Passed through as it is: werkzeug's wrappers would add two generator levels, and a
    # kilobyte of saved stack each, to every idle stream.
    return Response(body, status=200, headers=STREAM_HEADERS, direct_passthrough=True)


def push() -> Response:
    return jsonify(handlers.push(_state(), _request()))


def _request() -> Request:
    """The request itself rather than Flask's context-local proxy: a hook may keep it."""
    return request._get_current_object()  # type: ignore[attr-defined,no-any-return]


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
    handlers.check_query_length(_state(), request)


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
    """The error handler of the blueprint and of the standalone service: the one error
    path (:func:`handlers.as_refusal`), answered in JSON."""
    return refusal_response(handlers.as_refusal(exc, _request()))


def refusal_response(refusal: Refusal) -> Response:
    """The JSON answer to a refused request, with every field and header the refusal carries."""
    response = jsonify(refusal.to_json())
    response.status_code = refusal.status
    response.headers.update(refusal.headers)
    return response
