"""The standalone service's hot path: ``POST /`` and ``GET /?channel=...`` served in WSGI,
in front of the Flask app, without Flask's request cycle.

A push is the request a broker serves most, and Flask's cycle (request context, URL
matching, hooks, a response object, its WSGI adaptation) cost about as much as the push
itself: 200 µs of the 660 µs a push cost before this path. Here the request is Flask's own
request class on the same environ, the rules are the blueprint's (``handlers``), and the
answer carries the same status, body and headers: CORS, security headers, the JSON error of
the one error path. Every other request (health, metrics, presence, preflights, the browser
client, anything unknown) goes on to the Flask app. An embedding app keeps the blueprint
and all of Flask's semantics; this path exists only in the standalone service, whose app has
no hooks of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from flask import Flask, Request
from flask_cors.core import get_cors_headers
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.http import HTTP_STATUS_CODES

from .. import handlers
from ..handlers import STREAM_HEADERS
from ..security.headers import SECURITY_HEADERS
from ..security.redaction import note_request
from ..state import EXTENSION_KEY, ImpulseState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_JSON = ("Content-Type", "application/json")
_SECURITY_HEADERS = [*SECURITY_HEADERS.items(), ("Cache-Control", "no-store")]  # as add_security_headers adds them
_SECURITY_HEADERS_OF_A_STREAM = [header for header in _SECURITY_HEADERS if header[0] != "Cache-Control"]
_PRIVATE_NETWORK = "HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK"


class HotPath:
    """WSGI middleware answering the stream and the push of the service at ``/``."""

    def __init__(self, app: Flask, downstream: WSGIApplication) -> None:
        self.app = app
        self.downstream = downstream
        self.state: ImpulseState = app.extensions[EXTENSION_KEY]
        self._cors_without_origin: dict[str, list[tuple[str, str]]] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if environ.get("PATH_INFO") in ("/", "") and (
            method == "POST" or (method == "GET" and environ.get("QUERY_STRING"))
        ):
            return self.serve(environ, start_response, method == "POST")
        return self.downstream(environ, start_response)

    def serve(self, environ: WSGIEnvironment, start_response: StartResponse, is_push: bool) -> Iterable[bytes]:
        state = self.state
        with self.app.app_context():
            # Not kept in the environ (werkzeug's default): that cycle would hold every
            # stream's environ and request until the garbage collector ran.
            request: Request = self.app.request_class(environ, populate_request=False)
            note_request(request)
            body: Iterable[bytes] | bytes
            try:
                handlers.check_query_length(state, request)
                if is_push:
                    body, headers = self._json(handlers.push(state, request)), [_JSON]
                else:
                    body, headers = handlers.open_stream(state, request), list(STREAM_HEADERS.items())
                status, refused = 200, False
            except Exception as exc:
                refused = True
                refusal = handlers.as_refusal(exc, request)
                body, headers, status = self._json(refusal.to_json()), [_JSON], refusal.status
                headers.extend(refusal.headers.items())
            if isinstance(body, bytes):
                headers.append(("Content-Length", str(len(body))))
            headers.extend(self._cors_headers(request))
            if state.settings.security_headers:
                # As add_security_headers adds them: only those the answer does not set itself
                # (a stream its Cache-Control; a refusal may carry any header).
                if refused:
                    present = {name.lower() for name, _ in headers}
                    headers.extend(header for header in _SECURITY_HEADERS if header[0].lower() not in present)
                else:
                    headers.extend(_SECURITY_HEADERS if is_push else _SECURITY_HEADERS_OF_A_STREAM)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}", headers)
        return [body] if isinstance(body, bytes) else body

    def _cors_headers(self, request: Request) -> list[tuple[str, str]]:
        """flask-cors's headers for this request; computed once per method for requests
        without an ``Origin`` (server-to-server pushes), whose headers depend on nothing else."""
        environ = request.environ
        if "HTTP_ORIGIN" in environ or _PRIVATE_NETWORK in environ:
            return _as_list(get_cors_headers(self.state.cors_options, request.headers, request.method))
        method = request.method
        cached = self._cors_without_origin.get(method)
        if cached is None:
            cached = _as_list(get_cors_headers(self.state.cors_options, Headers(), method))
            self._cors_without_origin[method] = cached
        return cached

    def _json(self, value: Any) -> bytes:
        """Encoded as ``jsonify`` encodes it (sorted keys, a final newline), by orjson; in
        debug mode by the app's JSON provider, indented as ``jsonify`` indents it there."""
        if self.app.debug:
            return f"{self.app.json.dumps(value, indent=2)}\n".encode()
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def _as_list(headers: MultiDict[str, Any]) -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in headers.items(multi=True)]
