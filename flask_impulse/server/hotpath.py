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

from flask import Flask, Request
from flask_cors.core import get_cors_headers
from werkzeug.datastructures import Headers
from werkzeug.http import HTTP_STATUS_CODES

from .. import handlers
from ..handlers import STREAM_HEADERS
from ..security.headers import add_security_headers
from ..security.redaction import note_request
from ..state import EXTENSION_KEY, ImpulseState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_JSON_HEADERS = {"Content-Type": "application/json"}


class HotPath:
    """WSGI middleware answering the stream and the push of the service at ``/``."""

    def __init__(self, app: Flask, downstream: WSGIApplication) -> None:
        self.app = app
        self.downstream = downstream
        self.state: ImpulseState = app.extensions[EXTENSION_KEY]

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
            request: Request = self.app.request_class(environ)
            note_request(request)
            body: Iterable[bytes] | bytes
            try:
                handlers.check_query_length(state, request)
                if is_push:
                    body, headers = self._json(handlers.push(state, request)), Headers(_JSON_HEADERS)
                else:
                    body, headers = handlers.open_stream(state, request), Headers(STREAM_HEADERS)
                status = 200
            except Exception as exc:
                refusal = handlers.as_refusal(exc, request)
                body, headers, status = self._json(refusal.to_json()), Headers(_JSON_HEADERS), refusal.status
                headers.update(refusal.headers)
            if isinstance(body, bytes):
                headers["Content-Length"] = str(len(body))
            headers.extend(get_cors_headers(state.cors_options, request.headers, request.method))
            if state.settings.security_headers:
                add_security_headers(headers)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}", headers.to_wsgi_list())
        return [body] if isinstance(body, bytes) else body

    def _json(self, value: Any) -> bytes:
        """Encoded as ``jsonify`` encodes it, by the app's JSON provider."""
        provider = self.app.json
        compact = getattr(provider, "compact", None)
        if (compact is None and self.app.debug) or compact is False:
            return f"{provider.dumps(value, indent=2)}\n".encode()
        return f"{provider.dumps(value, separators=(',', ':'))}\n".encode()
