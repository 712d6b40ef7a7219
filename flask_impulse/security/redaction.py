"""Keeping tokens and secrets out of logs.

Subscriber tokens travel in query strings (EventSource cannot set headers), in
``Authorization`` headers and in cookies; push secrets in ``Authorization``. Every log record
of the process, gunicorn's access and error lines, Flask's app logger, our own loggers and
any app code's, goes through :func:`redact_record` when it is made (:func:`install` puts it
in the logging record factory), tracebacks included. It takes out token-like patterns
(``token=...``, ``Bearer ...``, JWTs, credential headers) and, wherever they appear and
however they are quoted, the values known to be secret: the configured secrets and keys,
and the credentials of the request being served (an app's hook may put them in an
exception's text).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

from flask import Request, g, has_app_context, has_request_context, request

from ..validation import query_value

REDACTED = "[redacted]"

#: Parameter names whose values are never logged (matched case-insensitively, after percent-decoding).
_SENSITIVE_NAME = re.compile(r"token|jwt|secret|passw|auth|key|session|signature", re.IGNORECASE)
# name=value pairs in a query string, a cookie header or a repr of raw request bytes.
_PAIR = re.compile(r"(?P<name>[^\s=&;?'\"\\]+)=(?P<value>[^\s&;'\"\\]*)")
# Values no credential takes, left as they are so that a switch reads as written in a hint or
# a settings dump ("set IMPULSE_PUSH_WITHOUT_SECRET=true."): each tells one bit, never a secret.
_SWITCH_VALUES = frozenset({"", REDACTED, "true", "false", "yes", "no", "on", "off", "0", "1"})
_HEADER_LINE = re.compile(
    r"(?P<name>(?:proxy-)?authorization|cookie|set-cookie)(?P<sep>\s*:\s*)[^\r\n'\"\\]*", re.IGNORECASE
)
_BEARER = re.compile(r"(?P<scheme>\b(?:bearer|basic)\s+)[^\s'\"\\,]+", re.IGNORECASE)
# Base64url JSON objects start with "eyJ": any compact JWS or JWE, wherever it appears.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*")

#: Access-log atoms that are credentials through and through.
SECRET_ATOMS = frozenset(
    {
        "{authorization}i",
        "{proxy-authorization}i",
        "{cookie}i",
        "{http_authorization}e",
        "{http_proxy_authorization}e",
        "{http_cookie}e",
        "{set-cookie}o",
    }
)


#: Shorter known values are left to the patterns: replaced by value, a two-letter token
#: would blank out every word that holds it, and a secret that short is no secret.
MIN_KNOWN_LENGTH = 8
# The configured secrets of every app set up in this process.
_known: set[str] = set()
_install_lock = threading.Lock()
_installed = False


def redact(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with every token-like value, and each of ``known``, replaced by ``[redacted]``."""
    # Longest first: a secret that contains another is taken out whole.
    for value in sorted(known, key=len, reverse=True):
        if len(value) >= MIN_KNOWN_LENGTH:
            text = text.replace(value, REDACTED)
    text = _JWT.sub(REDACTED, text)
    text = _HEADER_LINE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group('scheme')}{REDACTED}", text)
    return _PAIR.sub(_redact_pair, text)


def _redact_pair(match: re.Match[str]) -> str:
    name, value = match.group("name", "value")
    if _SENSITIVE_NAME.search(unquote_plus(name)) and value.rstrip(".,:;!?)").lower() not in _SWITCH_VALUES:
        return f"{name}={REDACTED}"
    return match.group(0)


def add_known_secrets(values: Iterable[str | None]) -> None:
    """Redact these values by value from now on, wherever a log record holds them."""
    _known.update(value for value in values if value and len(value) >= MIN_KNOWN_LENGTH)


def note_request_secrets(values: Iterable[str | None]) -> None:
    """Redact these values from the records logged while the current request is served
    (the audience tokens of a push, say)."""
    fresh = [value for value in values if value and len(value) >= MIN_KNOWN_LENGTH]
    if fresh:  # most pushes have no audience: no set in ``g`` for them
        noted: set[str] = g.setdefault("_impulse_secrets", set())
        noted.update(fresh)


def note_request(served: Request) -> None:
    """Name the request being served where Flask's request context does not (the standalone
    service's hot path), so that its credentials are redacted as in any other request."""
    g._impulse_request = served


def _request_secrets() -> list[str]:
    """The credentials of the request being served: ``?token=``, ``Authorization``, cookies."""
    if has_request_context():
        served: Request = request
    elif has_app_context() and "_impulse_request" in g:
        served = g._impulse_request
    else:
        return []
    values = [query_value(served, "token") or "", *served.cookies.values()]
    scheme, _, credentials = served.headers.get("Authorization", "").partition(" ")
    values += [credentials.strip(), scheme]  # a bare token, without "Bearer", is the scheme
    return values + list(g.get("_impulse_secrets", ()))


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record's message, traceback and stack in place: the one path every record takes."""
    try:
        known = [*_known, *_request_secrets()]
        message = record.getMessage()
        cleaned = redact(message, known)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when set: the traceback is redacted once, here.
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info), known)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, known)
    except Exception:  # a record that cannot be redacted is still logged, and its handler reports the fault
        return


class RedactingFilter(logging.Filter):
    """Redacts a record's message; attached to gunicorn's error log, which records may reach
    before :func:`install` has run."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install() -> None:
    """Make every log record of the process pass :func:`redact_record` when it is created.

    A record factory rather than a filter: filters apply only to the logger or handler they
    are attached to, and a record from any other logger (an app's own, a library's) would
    pass unredacted. Installing twice is harmless.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        make_record = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            redact_record(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _installed = True


_FORMATTER = logging.Formatter()
