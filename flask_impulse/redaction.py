"""Keeping tokens and secrets out of logs.

Subscriber tokens travel in query strings (EventSource cannot set headers), in
``Authorization`` headers and in cookies; push secrets in ``Authorization``. Whatever
gunicorn writes, access lines and error messages alike, goes through :func:`redact` first.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "[redacted]"

#: Parameter names whose values are never logged (matched case-insensitively, after percent-decoding).
_SENSITIVE_NAME = re.compile(r"token|jwt|secret|passw|auth|key|session|signature", re.IGNORECASE)
# name=value pairs in a query string, a cookie header or a repr of raw request bytes.
_PAIR = re.compile(r"(?P<name>[^\s=&;?'\"\\]+)=(?P<value>[^\s&;'\"\\]*)")
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


def redact(text: str) -> str:
    """``text`` with every token-like value replaced by ``[redacted]``."""
    text = _JWT.sub(REDACTED, text)
    text = _HEADER_LINE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group('scheme')}{REDACTED}", text)
    return _PAIR.sub(_redact_pair, text)


def _redact_pair(match: re.Match[str]) -> str:
    name = match.group("name")
    if _SENSITIVE_NAME.search(unquote_plus(name)) and match.group("value") not in ("", REDACTED):
        return f"{name}={REDACTED}"
    return match.group(0)


class RedactingFilter(logging.Filter):
    """Redacts a record's message; attached to gunicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when set: the traceback is redacted once, here.
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
        return True


_FORMATTER = logging.Formatter()
