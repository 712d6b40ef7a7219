"""gunicorn's gevent worker, with JSON answers to requests that never reach the app.

gunicorn refuses malformed or oversized requests itself (request line over
``limit_request_line``, a header over ``limit_request_field_size``, too many headers, a bad
chunk...) with a small HTML page that quotes the offending bytes, and logs them at warning
level. Those bytes may be a token: this worker answers ``{"error": ...}`` with the same
status, quotes nothing, and logs only the kind of error.
"""

from __future__ import annotations

import ssl
from datetime import datetime
from typing import Any

from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.ggevent import GeventWorker

from . import _json
from .redaction import redact
from .security_headers import add_security_headers

# Statuses that are not 400, by gunicorn exception class name (names, so that classes a
# gunicorn version lacks cost nothing).
_STATUS = {
    "LimitRequestLine": (414, "URI Too Long"),
    "LimitRequestHeaders": (431, "Request Header Fields Too Large"),
    "UnsupportedTransferCoding": (501, "Not Implemented"),
    "ExpectationFailed": (417, "Expectation Failed"),
    "ForbiddenProxyRequest": (403, "Forbidden"),
    "ConfigurationProblem": (500, "Internal Server Error"),
    "InvalidResponseHeader": (500, "Internal Server Error"),
    "InvalidResponseHeaderName": (500, "Internal Server Error"),
}


def error_status(exc: BaseException) -> tuple[int, str]:
    """gunicorn's status for an error it meets before or around the app."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _STATUS:
            return _STATUS[cls.__name__]
    if isinstance(exc, errors.ParseException):
        return 400, "Bad Request"
    if isinstance(exc, ssl.SSLError):
        return 403, "Forbidden"
    return 500, "Internal Server Error"


class ImpulseGeventWorker(GeventWorker):  # type: ignore[misc]
    """The gevent worker, answering its own errors in JSON without echoing the request."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        request_start = datetime.now()
        addr = addr or ("", -1)  # a unix socket has no address
        status, reason = error_status(exc)
        if status != 500:  # every other status, 501 for an unknown transfer coding included, is the client's doing
            self.log.warning("Invalid request from ip=%s: %s (%s)", addr[0], reason, type(exc).__name__)
            if req is None:
                req = getattr(exc, "req", None)  # a bad header: the request line is known, for the access log
        elif req is not None and hasattr(req, "uri"):
            self.log.exception("Error handling request %s %s", req.method, redact(req.uri))
        else:
            self.log.exception("Error handling request (no URI read)")
        answer = {"error": reason}
        if status in (414, 431):
            answer["details"] = self._details(status)
        body = _json.dumps(answer)
        if req is not None and hasattr(req, "headers"):
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            response = Response(req, client, self.cfg)
            response.status = f"{status} {reason}"
            response.response_length = len(body)
            self.log.access(response, req, environ, datetime.now() - request_start)
        headers = {"Connection": "close", "Content-Type": "application/json", "Content-Length": str(len(body))}
        if self._security_headers():
            add_security_headers(headers)
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head += "\r\n"
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:
            self.log.debug("Failed to send error message.")

    def _security_headers(self) -> bool:
        """Whether the app this worker serves wants the security headers (on by default)."""
        state = getattr(self.wsgi, "extensions", {}).get("impulse")
        return state is None or bool(state.settings.security_headers)

    def _details(self, status: int) -> str:
        cfg = self.cfg
        if status == 414:
            return f"the request line may hold at most {cfg.limit_request_line} bytes"
        return (
            f"a header may hold at most {cfg.limit_request_field_size} bytes, "
            f"and a request at most {cfg.limit_request_fields} headers"
        )
