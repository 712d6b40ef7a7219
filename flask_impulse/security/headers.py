"""The security headers every answer carries (``IMPULSE_SECURITY_HEADERS``, on by default).

Nothing flask-impulse answers is meant to be rendered, framed or kept: JSON, a stream, the
browser client module. The headers tell a browser so, which is what the reference broker's
``HELMET_ENABLED`` stands for. Streams keep ``Cache-Control: no-cache`` (what the SSE
specification and proxies expect), the browser client module keeps its short ``max-age``
(public code, revalidated), every other answer is ``no-store``.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from werkzeug.datastructures import Headers

#: On every answer: no content sniffing, no referrer, and no framing (the CSP form for
#: current browsers, X-Frame-Options for older ones).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


def add_security_headers(headers: Headers | MutableMapping[str, str]) -> None:
    """Add the security headers, and ``no-store`` unless the answer set its own caching."""
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    headers.setdefault("Cache-Control", "no-store")
