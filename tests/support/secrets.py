"""Every secret, key and token the test suite uses, in one place.

The session's last check (``tests/conftest.py``) greps every server log written during the
run for each value here, and for every token handed out through :func:`remember`: none may
appear. Values made per run are random, so a match cannot be a coincidence.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# Fixed values, because the apps under tests/apps read them in other processes.
PUSH_SECRET = "test-secret"
EMBEDDED_PUSH_SECRET = "embedded-secret"


def _random(label: str, size: int = 24) -> str:
    return f"{label}-{secrets.token_urlsafe(size)}"


#: Two push secrets valid at once (rotation), and a secret-looking value valid nowhere.
ROTATING_PUSH_SECRETS = (_random("push-current"), _random("push-next"))
UNKNOWN_PUSH_SECRET = _random("push-unknown")
HEALTH_TOKEN = _random("health")
CONSOLE_TOKEN = _random("console")
TOKEN_HASH_KEY = _random("token-hash-key")
#: HMAC keys for HS256: the service's, and one it does not know.
JWT_SECRET = _random("jwt-hmac", 64)
FOREIGN_JWT_SECRET = _random("jwt-foreign", 64)
#: A plain (unsigned) subscriber token, for the compatible mode.
PLAIN_TOKEN = _random("plain-token")
#: A subscriber token that tests/apps/hooked.py's hooks put in the text of the exceptions they raise.
HOOK_TOKEN = _random("hook-token")


def _pem_pair(private_key: Any) -> tuple[str, str]:
    private = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


RSA_PRIVATE_PEM, RSA_PUBLIC_PEM = _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PRIVATE_PEM, EC_PUBLIC_PEM = _pem_pair(ec.generate_private_key(ec.SECP256R1()))
FOREIGN_RSA_PRIVATE_PEM, _ = _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))

_issued: list[str] = []


def remember(token: str) -> str:
    """Record a token the suite sends, so the log check looks for it; return it."""
    _issued.append(token)
    return token


def make_token(
    subject: str,
    channels: list[str],
    *,
    topics: list[str] | None = None,
    ttl: float = 600,
    key: Any = None,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A signed subscriber token (by default one the service accepts), remembered."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": subject, "channels": channels, "iat": now, "exp": now + int(ttl), **claims}
    if topics is not None:
        payload["topics"] = topics
    if payload["exp"] is None:
        del payload["exp"]
    signing_key = (
        key if key is not None else {"HS256": JWT_SECRET, "RS256": RSA_PRIVATE_PEM, "ES256": EC_PRIVATE_PEM}[algorithm]
    )
    return remember(jwt.encode(payload, signing_key, algorithm=algorithm))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade_token(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A token PyJWT would refuse to make: any header, signed with HMAC-SHA256 over any key
    bytes (or unsigned), as an attacker would build it. Remembered."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = b64url(hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()) if hmac_key else ""
    return remember(f"{signing_input}.{signature}")


def secret_values() -> list[str]:
    """What must never reach a log: every secret and key, every token sent, and each signed
    token's signature alone (a log that cut a token short would still hold it)."""
    values = [
        PUSH_SECRET,
        EMBEDDED_PUSH_SECRET,
        *ROTATING_PUSH_SECRETS,
        UNKNOWN_PUSH_SECRET,
        HEALTH_TOKEN,
        CONSOLE_TOKEN,
        TOKEN_HASH_KEY,
        JWT_SECRET,
        FOREIGN_JWT_SECRET,
        PLAIN_TOKEN,
        HOOK_TOKEN,
    ]
    for pem in (RSA_PRIVATE_PEM, EC_PRIVATE_PEM, FOREIGN_RSA_PRIVATE_PEM):
        values.append(pem.splitlines()[1])  # the first line of key material
    for token in _issued:
        values.append(token)
        signature = token.rsplit(".", 1)[-1]
        if len(signature) >= 16:
            values.append(signature)
    return values


def leaks(paths: list[Path], values: list[str]) -> list[str]:
    """``path: value`` for every value found in one of ``paths``."""
    found = []
    for path in paths:
        text = path.read_text(errors="replace")
        found += [f"{path.name}: {value[:12]}..." for value in values if value and value in text]
    return found
