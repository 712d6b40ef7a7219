"""The CORS policy, strict: only the configured origins are answered, each by name.

flask-cors does the header work; this module decides what it is given. Every configured
origin becomes an anchored pattern, so flask-cors never guesses whether a string is a
regular expression, and a prefix never matches (``https://app.example.com`` does not let in
``https://app.example.com.evil.net``). ``*`` inside an origin stands for one or more DNS
labels: ``https://*.example.com`` allows ``https://a.example.com``, not ``https://example.com``.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint
from flask_cors.core import get_cors_options

from ..errors import ConfigurationError

_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+", re.IGNORECASE)
_LABELS = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*"


def cors_options(blueprint: Blueprint, origins: tuple[str, ...], credentials: bool) -> Any:
    """flask-cors options for ``origins`` ("*" or a list), with or without credentials."""
    wildcard = "*" in origins
    if wildcard and credentials:
        raise ConfigurationError(
            "IMPULSE_CORS_CREDENTIALS (CORS_CREDENTIALS) needs an explicit list of origins in "
            "IMPULSE_CORS_ORIGINS (CORS_ORIGIN): with '*', every site could read credentialed streams"
        )
    # The blueprint has no config: flask-cors then ignores any CORS_* keys of the host app,
    # so that the policy here is the whole policy.
    return get_cors_options(
        blueprint,
        {
            "origins": ["*"] if wildcard else [origin_pattern(origin) for origin in origins],
            "supports_credentials": credentials,
            # The reference answers "*" to every request, with or without an Origin; an
            # explicit list names the request's origin, and only when it is on the list.
            "send_wildcard": wildcard,
            "always_send": wildcard,
            "allow_headers": ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            "methods": ["GET", "POST", "OPTIONS"],
            "vary_header": True,
        },
    )


def origin_pattern(origin: str) -> re.Pattern[str]:
    """An anchored, case-insensitive pattern for one configured origin."""
    origin = origin.strip().rstrip("/")  # "https://app.example.com/" is a common slip
    if not _ORIGIN.fullmatch(origin):
        raise ConfigurationError(
            f"CORS origin {origin!r} is not of the form scheme://host[:port] (e.g. https://app.example.com)"
        )
    pattern = _LABELS.join(re.escape(part) for part in origin.split("*"))
    return re.compile(rf"\A{pattern}\Z", re.IGNORECASE)
