"""Signed subscriber tokens: JWTs naming the channels and topics their holder may read.

Only three algorithms are accepted, each pinned to one kind of key: HS256 to the HMAC
secrets, RS256 to RSA public keys, ES256 to P-256 public keys. A token is only ever checked
against the keys of the algorithm its header names, and only with that algorithm, so
``alg: none``, other algorithms, and "algorithm confusion" (an HS256 token signed with a
public key used as an HMAC secret) all fail.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, ImpulseError, TokenRejected
from ..validation import check_name

if TYPE_CHECKING:
    from types import ModuleType

ACCEPTED_ALGORITHMS = ("HS256", "RS256", "ES256")
#: RFC 7518 section 3.2: an HS256 key must be at least as long as the hash.
MIN_HMAC_KEY_BYTES = 32
MIN_RSA_KEY_BITS = 2048
#: Claims that issue_token() sets itself and that extra claims may not replace.
RESERVED_CLAIMS = frozenset({"sub", "iat", "exp", "nbf", "channels", "topics", "aud", "iss"})

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class Grant:
    """What a verified token allows: who holds it, what it may read, and until when."""

    subject: str
    channels: tuple[str, ...]
    #: None when the token does not restrict topics.
    topics: tuple[str, ...] | None
    expires_at: float
    claims: Mapping[str, Any] = field(repr=False, compare=False)

    def allows_channel(self, channel: str) -> bool:
        return any(matches(pattern, channel) for pattern in self.channels)

    def allows_topic(self, topic: str | None) -> bool:
        """A stream without a topic receives only what is pushed to the whole channel, which
        the channel grant already covers; a topic must be granted by name or pattern."""
        if topic is None or self.topics is None:
            return True
        return any(matches(pattern, topic) for pattern in self.topics)


def _jwt() -> ModuleType:
    """PyJWT, imported on first use: it imports ssl, which must stay out of a gunicorn master
    so that gevent can patch it cleanly in the workers."""
    import jwt

    return jwt


def matches(pattern: str, value: str) -> bool:
    """``*`` in ``pattern`` stands for any run of characters (``chat:*``, ``*:public``, ``*``);
    every other character matches itself."""
    if "*" not in pattern:
        return pattern == value
    return _compile_pattern(pattern).match(value) is not None


@functools.lru_cache(maxsize=4096)
def _compile_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z", re.DOTALL)


# -- keys ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenKeys:
    """Verification keys by algorithm, and the key issue_token() signs with."""

    by_algorithm: Mapping[str, tuple[Any, ...]]
    signing_algorithm: str | None = None
    signing_key: Any = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        secrets: str | Iterable[str] | None = None,
        public_keys: str | Iterable[str] | None = None,
        private_key: str | None = None,
    ) -> TokenKeys:
        """Keys from settings: HMAC secrets (a string or a list, for rotation), PEM public keys
        (text or file paths; one value may hold several PEM blocks) and a PEM private key."""
        by_algorithm: dict[str, list[Any]] = {algorithm: [] for algorithm in ACCEPTED_ALGORITHMS}
        for secret in _as_list(secrets):
            key = secret.encode()
            if len(key) < MIN_HMAC_KEY_BYTES:
                raise ConfigurationError(
                    f"IMPULSE_JWT_SECRET must be at least {MIN_HMAC_KEY_BYTES} bytes for HS256 "
                    "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            by_algorithm["HS256"].append(key)
        for value in _as_list(public_keys):
            for block in _pem_blocks(value, "IMPULSE_JWT_PUBLIC_KEY"):
                public = _load_pem(block, private=False)
                by_algorithm[_algorithm_for(public)].append(public)
        signing_algorithm, signing_key = None, None
        if private_key:
            blocks = _pem_blocks(private_key, "IMPULSE_JWT_PRIVATE_KEY")
            if len(blocks) != 1:
                raise ConfigurationError("IMPULSE_JWT_PRIVATE_KEY must hold exactly one PEM private key")
            signing_key = _load_pem(blocks[0], private=True)
            signing_algorithm = _algorithm_for(signing_key.public_key())
            # What this service signs, it must accept.
            by_algorithm[signing_algorithm].append(signing_key.public_key())
        elif by_algorithm["HS256"]:
            signing_algorithm, signing_key = "HS256", by_algorithm["HS256"][0]
        return cls({alg: tuple(keys) for alg, keys in by_algorithm.items() if keys}, signing_algorithm, signing_key)

    def __bool__(self) -> bool:
        return bool(self.by_algorithm)


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [item for item in value if item]


def _pem_blocks(value: str, setting: str) -> list[str]:
    if "-----BEGIN" not in value:
        try:
            value = Path(value).read_text()
        except (OSError, ValueError):
            # Never echo the value: it may be a key pasted without its PEM armour.
            raise ConfigurationError(f"{setting} is neither PEM text nor a readable PEM file") from None
    blocks = [match.group(0) for match in _PEM_BLOCK.finditer(value)]
    if not blocks:
        raise ConfigurationError(f"{setting} holds no PEM block")
    return blocks


def _load_pem(block: str, *, private: bool) -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise ConfigurationError(
            "RS256 and ES256 tokens need the cryptography package: pip install flask-impulse[jwt]"
        ) from None
    try:
        if private:
            return serialization.load_pem_private_key(block.encode(), password=None)
        return serialization.load_pem_public_key(block.encode())
    except (ValueError, TypeError) as exc:
        kind = "private" if private else "public"
        raise ConfigurationError(
            f"a configured JWT {kind} key is not a PEM {kind} key ({type(exc).__name__})"
        ) from None


def _algorithm_for(public_key: Any) -> str:
    """The one algorithm a key may verify: this pinning is what defeats algorithm confusion."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_KEY_BITS:
            raise ConfigurationError(f"RSA keys for RS256 must have at least {MIN_RSA_KEY_BITS} bits")
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ConfigurationError("EC keys must be on the P-256 curve (ES256)")
        return "ES256"
    raise ConfigurationError("JWT keys must be RSA (RS256) or EC P-256 (ES256)")


# -- verifying ------------------------------------------------------------------------------
class TokenVerifier:
    """Checks subscriber tokens against the configured keys and claims."""

    def __init__(
        self,
        keys: TokenKeys,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 30.0,
        max_length: int = 4096,
    ) -> None:
        self.keys = keys
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.max_length = max_length

    def verify(self, token: str) -> Grant:
        """The grant ``token`` carries, or ``TokenRejected``."""
        jwt = _jwt()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRejected("Invalid token", "not a compact JWT") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.keys.by_algorithm:
            shown = repr(algorithm)[:24]
            raise TokenRejected("Invalid token", f"algorithm {shown} is not accepted here")
        claims = self._decode(token, algorithm, self.keys.by_algorithm[algorithm])
        return self._grant(claims)

    def _decode(self, token: str, algorithm: str, keys: Sequence[Any]) -> dict[str, Any]:
        jwt = _jwt()
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={"require": ["exp", "sub"]},
                )
                return claims
            except jwt.InvalidSignatureError:
                continue  # rotation: the next key of this algorithm may be the one
            except jwt.ExpiredSignatureError:
                raise TokenRejected("Token expired", "its exp claim is in the past") from None
            except jwt.ImmatureSignatureError:
                raise TokenRejected("Token not yet valid", "its nbf or iat claim is in the future") from None
            except jwt.MissingRequiredClaimError as exc:
                raise TokenRejected("Invalid token", f"the {exc.claim} claim is required") from None
            except jwt.InvalidAudienceError:
                raise TokenRejected("Invalid token", "its aud claim does not name IMPULSE_JWT_AUDIENCE") from None
            except jwt.InvalidIssuerError:
                raise TokenRejected("Invalid token", "its iss claim is not IMPULSE_JWT_ISSUER") from None
            except jwt.InvalidTokenError as exc:
                raise TokenRejected("Invalid token", f"malformed ({type(exc).__name__})") from None
        raise TokenRejected("Invalid token", "the signature does not verify with any configured key")

    def _grant(self, claims: dict[str, Any]) -> Grant:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("Invalid token", "the sub claim must be a non-empty string")
        try:
            check_name(subject, "sub", self.max_length)
        except ImpulseError:
            raise TokenRejected("Invalid token", "the sub claim holds control characters or is too long") from None
        channels = claims.get("channels")
        if not _is_string_list(channels) or not channels:
            raise TokenRejected("Invalid token", "the channels claim must be a non-empty list of strings")
        topics = claims.get("topics")
        if topics is not None and not _is_string_list(topics):
            raise TokenRejected("Invalid token", "the topics claim must be a list of strings")
        return Grant(
            subject,
            tuple(channels),
            tuple(topics) if topics is not None else None,
            float(claims["exp"]) + self.leeway,
            claims,
        )


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


# -- issuing --------------------------------------------------------------------------------
def issue_token(
    subject: str,
    *,
    key: Any,
    algorithm: str = "HS256",
    channels: Sequence[str],
    topics: Sequence[str] | None = None,
    ttl: float = 3600,
    audience: str | None = None,
    issuer: str | None = None,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A signed token for ``subject``, valid for ``ttl`` seconds, that may subscribe to
    ``channels`` (patterns with ``*``) and, when given, only to ``topics``.

    Use it where the service's keys live elsewhere (an app in front of the standalone
    service); an embedded app calls ``impulse.issue_token`` instead.
    """
    if algorithm not in ACCEPTED_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ACCEPTED_ALGORITHMS)}")
    if not isinstance(subject, str) or not subject:
        raise ValueError("subject must be a non-empty string")
    if isinstance(channels, str) or not channels or not all(isinstance(c, str) and c for c in channels):
        raise ValueError("channels must be a non-empty list of channel names or patterns")
    if topics is not None and (isinstance(topics, str) or not all(isinstance(t, str) and t for t in topics)):
        raise ValueError("topics must be a list of topic names or patterns")
    if ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds")
    extra = dict(claims or {})
    reserved = RESERVED_CLAIMS.intersection(extra)
    if reserved:
        raise ValueError(f"claims may not set {', '.join(sorted(reserved))}: use the arguments")
    now = int(time.time())
    payload: dict[str, Any] = {**extra, "sub": subject, "iat": now, "exp": now + math.ceil(ttl)}
    payload["channels"] = list(channels)
    if topics is not None:
        payload["topics"] = list(topics)
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    return _jwt().encode(payload, key, algorithm=algorithm)  # type: ignore[no-any-return]
