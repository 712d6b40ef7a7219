"""Who may publish: the bearer secret check, in constant time."""

from __future__ import annotations

import hmac

from ..errors import PushError


def check_publisher(authorization: str | None, secrets: tuple[str, ...]) -> str:
    """Return the secret a publisher presented, or raise ``PushError`` (401 or 403).

    Every configured secret is compared, with ``hmac.compare_digest``, whether or not an
    earlier one matched: the time taken says nothing about which secret, if any, was close.
    """
    if not authorization or not authorization.startswith("Bearer "):
        raise PushError("Authorization header required", status=401)
    presented = authorization[len("Bearer ") :].encode()
    matched = None
    for secret in secrets:
        if hmac.compare_digest(presented, secret.encode()):
            matched = secret
    if matched is None:
        raise PushError("Invalid token", status=403)
    return matched
