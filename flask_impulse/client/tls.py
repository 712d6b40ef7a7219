"""``verify=`` of the Python clients, read as requests reads it: ``True`` (the system's CA
certificates), a path to a CA bundle (a private CA, or a test's self-signed certificate), or
``False`` (no check at all: for tests only)."""

from __future__ import annotations

import ssl

Verify = bool | str


def ssl_context(verify: Verify) -> ssl.SSLContext:
    """The context an ``https://`` stream is opened with, for ``verify``."""
    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
