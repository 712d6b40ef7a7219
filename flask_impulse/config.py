"""Every ``IMPULSE_*`` setting, its default, and what it is for.

The extension reads these once, in ``init_app``; change them before that call. The
standalone service maps the reference broker's environment variables onto them (see
``service.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigurationError

MiB = 1024 * 1024
#: The shortest secret the documentation asks for (SECURITY.md's production checklist).
MIN_SECRET_LENGTH = 32

log = logging.getLogger("flask_impulse")

#: Defaults, applied with ``app.config.setdefault``. One line each says what it controls.
DEFAULTS: dict[str, Any] = {
    # Bearer secret(s) for the HTTP push endpoint: a string, or a list to allow rotation.
    # Unset, the push endpoint of an embedded app is disabled (impulse.push() still works).
    # A blank one stops the app; one under 32 characters starts with a warning.
    "IMPULSE_SECRET": None,
    # Accept pushes from anyone when no secret is set. Only for local development.
    "IMPULSE_PUSH_WITHOUT_SECRET": False,
    # Seconds between ": heartbeat" comments; a failed heartbeat write is how a dead client is found.
    # Also how long a write may stall, and how long sent data may stay unacknowledged
    # (TCP_USER_TIMEOUT) before the stream is closed.
    "IMPULSE_HEARTBEAT_INTERVAL": 30.0,
    # Reconnect delay, in milliseconds, sent as "retry:" when a stream opens.
    "IMPULSE_RETRY_MS": 1000,
    # Largest accepted push body, in bytes, counted as it is read, so chunked bodies without a
    # Content-Length are held to it too (413 beyond it).
    "IMPULSE_MAX_BODY_SIZE": 1 * MiB,
    # Longest accepted channel, topic and token, in characters (400 beyond them).
    "IMPULSE_MAX_CHANNEL_LENGTH": 256,
    "IMPULSE_MAX_TOPIC_LENGTH": 256,
    "IMPULSE_MAX_TOKEN_LENGTH": 4096,
    # Most channels one stream may subscribe to (?channel=a&channel=b...).
    "IMPULSE_MAX_CHANNELS_PER_STREAM": 32,
    # Most tokens in one push's audience.
    "IMPULSE_MAX_AUDIENCE_TOKENS": 10_000,
    # Most push objects in one batch request.
    "IMPULSE_MAX_BATCH_SIZE": 1000,
    # Open streams per worker process; beyond it, 503 with Retry-After (1-5 s, random so that
    # refused clients do not come back together). Keep it below gunicorn's worker_connections.
    "IMPULSE_MAX_CONNECTIONS": 20_000,
    # A connection whose unsent backlog exceeds either bound is a slow consumer: it is closed
    # and resumes from history when it reconnects.
    "IMPULSE_QUEUE_MAX_MESSAGES": 10_000,
    "IMPULSE_QUEUE_MAX_BYTES": 8 * MiB,
    # Messages retained per channel for Last-Event-ID resume: at most this many, for at most
    # this many seconds. 0 turns history off.
    "IMPULSE_HISTORY_SIZE": 1000,
    "IMPULSE_HISTORY_TTL": 3600.0,
    # Seconds a push's idempotency key (Idempotency-Key header, "idempotencyKey" field) is
    # remembered: a repeat within it delivers nothing and answers the first push's id. 0: off.
    "IMPULSE_IDEMPOTENCY_TTL": 600.0,
    # Without Redis, most keys one worker remembers (about 360 bytes each, 18 MB when full):
    # beyond it the oldest is forgotten before its TTL ends (docs/reliability.md).
    "IMPULSE_IDEMPOTENCY_MAX_KEYS": 50_000,
    # Bytes of history a worker keeps in memory over all channels (frames plus a measured
    # overhead each), the oldest leaving first; a client resuming from before them gets a gap.
    # 64 MiB: 100,000 (one per channel) to 175,000 (on few channels) 160-byte frames, which a
    # 256 MiB container holds. 0: no bound.
    "IMPULSE_HISTORY_MAX_BYTES": 64 * MiB,
    # Seconds over which streams are ended on shutdown (SIGTERM, SIGINT, a worker restart),
    # spread out so reconnects do not stampede; each end carries a jittered "retry:" hint.
    "IMPULSE_DRAIN_WINDOW": 2.0,
    # Messages per second per publisher (the secret it presents; its address without a secret),
    # per worker; a batch costs one per message. 0: unlimited. Beyond it, 429 with Retry-After.
    "IMPULSE_PUSH_RATE_LIMIT": 0.0,
    # Health endpoint path, below the blueprint's prefix, and its optional bearer token (which
    # the readiness check requires too).
    "IMPULSE_HEALTH_PATH": "/health",
    "IMPULSE_HEALTH_TOKEN": None,
    # Readiness check path (a push must come back through a real connection: 200 or 503).
    # Unset, it is the health path followed by "/ready".
    "IMPULSE_READY_PATH": None,
    # Prometheus metrics path below the blueprint's prefix (pip install flask-impulse[metrics];
    # the health token applies); unset, there are no metrics. Totals over workers need
    # PROMETHEUS_MULTIPROC_DIR (docs/metrics.md).
    "IMPULSE_METRICS_PATH": None,
    # CORS: "*" (the reference's default), or a comma-separated list / list of origins.
    "IMPULSE_CORS_ORIGINS": "*",
    "IMPULSE_CORS_CREDENTIALS": False,
    # Redis backplane URL (pip install flask-impulse[redis]); unset, the broker is in memory.
    "IMPULSE_REDIS_URL": None,
    # Check each push on a declared channel (Impulse(channels=[...]) or impulse.channel(...))
    # against its payload type (with msgspec when installed, flask-impulse[validation]: faster).
    "IMPULSE_VALIDATE_PAYLOADS": True,
    # Prefix of every Redis key and of the pub/sub channel: apps sharing one Redis stay apart.
    "IMPULSE_REDIS_PREFIX": "impulse",
    # Seconds a push waits for the delivery counts of the worker processes it reached (Redis
    # only; see docs/scaling.md). 0: answer at once, and "sent" counts those processes.
    "IMPULSE_REDIS_SENT_TIMEOUT": 0.5,
    # Connections each worker keeps to Redis. A command beyond them waits for a free one (up
    # to the command timeout) rather than failing: 10,000 streams resuming at once after a
    # deploy would otherwise find the pool empty and open with a needless gap.
    "IMPULSE_REDIS_MAX_CONNECTIONS": 50,
    # Key for the keyed hash that stands in for subscriber tokens wherever they are stored or
    # compared. Unset, it is derived from the push secret, or random per process (refused
    # with Redis: every process sharing it must hash alike).
    "IMPULSE_TOKEN_HASH_KEY": None,
    # -- subscriber security (SECURITY.md) --
    # HMAC secret(s) for signed subscriber tokens (HS256, 32 bytes or more; a list allows
    # rotation). Setting this or IMPULSE_JWT_PUBLIC_KEY turns on JWT mode.
    "IMPULSE_JWT_SECRET": None,
    # PEM public key(s), RSA (RS256) or EC P-256 (ES256): PEM text or a file path; several
    # PEM blocks, or a list, allow rotation. Needs pip install flask-impulse[jwt].
    "IMPULSE_JWT_PUBLIC_KEY": None,
    # PEM private key (text or path) that impulse.issue_token() signs with (RS256/ES256).
    "IMPULSE_JWT_PRIVATE_KEY": None,
    # When set, tokens must carry this "aud" / "iss" claim.
    "IMPULSE_JWT_AUDIENCE": None,
    "IMPULSE_JWT_ISSUER": None,
    # Seconds of clock skew allowed on exp, nbf and iat (a stream closes at exp + leeway).
    "IMPULSE_JWT_LEEWAY": 30.0,
    # JWT mode: channels (comma-separated patterns, "*" a wildcard) open without a token.
    "IMPULSE_PUBLIC_CHANNELS": None,
    # Cookie a subscriber token may come in, after ?token= and Authorization: Bearer; "" turns it off.
    "IMPULSE_TOKEN_COOKIE": "impulse_token",
    # Open streams per client address and per token (per subject in JWT mode), in each worker;
    # 0: unlimited. Beyond them, 429 with Retry-After.
    "IMPULSE_MAX_STREAMS_PER_IP": 256,
    "IMPULSE_MAX_STREAMS_PER_TOKEN": 64,
    # Networks (comma-separated) whose addresses the per-address limit does not count: this
    # host and private networks, where proxies and load balancers speak for many clients.
    "IMPULSE_STREAMS_PER_IP_EXEMPT": "127.0.0.1/32,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
    # Longest query string, in bytes (414 JSON beyond it); gunicorn refuses request lines over 8190.
    "IMPULSE_MAX_QUERY_LENGTH": 6144,
    # Standalone service: proxies in front whose X-Forwarded-For names the client address.
    "IMPULSE_TRUSTED_PROXIES": 0,
    # nosniff, no-referrer, no-store and a deny-framing policy on every answer of the blueprint
    # (HELMET_ENABLED in the standalone service): a browser must not render, frame or cache them.
    "IMPULSE_SECURITY_HEADERS": True,
    # Channels (comma-separated patterns, "*" a wildcard) whose streams are counted as members,
    # for GET BASE/presence and ?presence=1 join/leave events (docs/presence.md); empty: off.
    "IMPULSE_PRESENCE_CHANNELS": None,
    # Most members one presence answer lists (the most a channel's answer costs to build and
    # send); beyond it only the counts, and "truncated": true.
    "IMPULSE_PRESENCE_MAX_MEMBERS": 100,
    # With Redis, seconds between the rewrites of each worker's presence counts: a killed
    # instance's members stop being counted within 3 times this, their leave events within 4.
    "IMPULSE_PRESENCE_REFRESH": 5.0,
    # Bearer token of the operator console at BASE/console and its JSON snapshot (docs/console.md);
    # unset, the console does not exist (404). Grants a view of every channel and a push: a secret.
    "IMPULSE_CONSOLE_TOKEN": None,
}


@dataclass(frozen=True)
class Settings:
    """The settings one app runs with, typed and validated once."""

    secrets: tuple[str, ...]
    push_without_secret: bool
    heartbeat_interval: float
    retry_ms: int
    max_body_size: int
    max_channel_length: int
    max_topic_length: int
    max_token_length: int
    max_channels_per_stream: int
    max_audience_tokens: int
    max_batch_size: int
    max_connections: int
    queue_max_messages: int
    queue_max_bytes: int
    history_size: int
    history_ttl: float
    idempotency_ttl: float
    idempotency_max_keys: int
    history_max_bytes: int
    drain_window: float
    push_rate_limit: float
    health_path: str
    health_token: str | None
    ready_path: str
    metrics_path: str | None
    cors_origins: tuple[str, ...]
    cors_credentials: bool
    redis_url: str | None
    redis_prefix: str
    redis_sent_timeout: float
    redis_max_connections: int
    token_hash_key: str | None
    validate_payloads: bool
    security_headers: bool
    presence_channels: tuple[str, ...]
    presence_max_members: int
    presence_refresh: float
    console_token: str | None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        values = {f.name: config[f"IMPULSE_{f.name.upper()}"] for f in fields(cls) if f.name != "secrets"}
        secret = config["IMPULSE_SECRET"]
        # A lone secret is taken whole (it may contain commas); a list allows rotation.
        values["secrets"] = checked_secrets("IMPULSE_SECRET", [secret] if isinstance(secret, str) else secret)
        _warn_if_short("IMPULSE_SECRET", values["secrets"])
        values["cors_origins"] = _as_tuple(values["cors_origins"]) or ("*",)
        values["cors_credentials"] = _as_bool(values["cors_credentials"])
        values["push_without_secret"] = _as_bool(values["push_without_secret"])
        values["validate_payloads"] = _as_bool(values["validate_payloads"])
        values["security_headers"] = _as_bool(values["security_headers"])
        values["presence_channels"] = _as_tuple(values["presence_channels"])
        if not isinstance(values["console_token"], str | None):
            raise ConfigurationError("IMPULSE_CONSOLE_TOKEN must be a string")
        console_token = checked_secrets("IMPULSE_CONSOLE_TOKEN", values["console_token"])
        _warn_if_short("IMPULSE_CONSOLE_TOKEN", console_token)
        values["console_token"] = console_token[0] if console_token else None
        health_path = values["health_path"]
        values["health_path"] = "/" + health_path.strip("/")
        ready_path = values["ready_path"] or values["health_path"] + "/ready"
        values["ready_path"] = "/" + ready_path.strip("/")
        if values["metrics_path"]:
            values["metrics_path"] = "/" + values["metrics_path"].strip("/")
        settings = cls(**values)
        settings._validate()
        return settings

    def _validate(self) -> None:
        if self.heartbeat_interval <= 0:
            raise ConfigurationError("IMPULSE_HEARTBEAT_INTERVAL must be a positive number of seconds")
        if self.history_size < 0 or self.history_ttl < 0 or self.history_max_bytes < 0:
            raise ConfigurationError(
                "IMPULSE_HISTORY_SIZE, IMPULSE_HISTORY_TTL and IMPULSE_HISTORY_MAX_BYTES must not be negative"
            )
        if self.idempotency_ttl < 0 or 0 < self.idempotency_ttl < 0.001:
            raise ConfigurationError("IMPULSE_IDEMPOTENCY_TTL must be 0 (off) or at least a millisecond (0.001 s)")
        if self.idempotency_max_keys < 1:
            raise ConfigurationError("IMPULSE_IDEMPOTENCY_MAX_KEYS must be positive")
        if self.queue_max_messages < 1 or self.queue_max_bytes < 1:
            raise ConfigurationError("IMPULSE_QUEUE_MAX_MESSAGES and IMPULSE_QUEUE_MAX_BYTES must be positive")
        if self.redis_max_connections < 4:
            # The worker's subscription and the presence listener each hold one for good.
            raise ConfigurationError("IMPULSE_REDIS_MAX_CONNECTIONS must be at least 4")
        if self.redis_sent_timeout < 0:
            raise ConfigurationError("IMPULSE_REDIS_SENT_TIMEOUT must not be negative")
        if self.health_path == "/" or self.ready_path == "/":
            raise ConfigurationError(
                "IMPULSE_HEALTH_PATH and IMPULSE_READY_PATH must not be the stream endpoint itself"
            )
        if self.ready_path == self.health_path:
            raise ConfigurationError("IMPULSE_READY_PATH must differ from IMPULSE_HEALTH_PATH")
        if self.metrics_path in ("/", self.health_path, self.ready_path):
            raise ConfigurationError(
                "IMPULSE_METRICS_PATH must differ from the stream endpoint, health and readiness paths"
            )
        if self.push_rate_limit < 0:
            raise ConfigurationError("IMPULSE_PUSH_RATE_LIMIT must not be negative (0 turns it off)")
        if self.presence_max_members < 0:
            raise ConfigurationError("IMPULSE_PRESENCE_MAX_MEMBERS must not be negative (0 lists counts only)")
        if self.presence_refresh <= 0:
            raise ConfigurationError("IMPULSE_PRESENCE_REFRESH must be a positive number of seconds")


def _as_tuple(value: Any) -> tuple[str, ...]:
    """A secret or origin setting as a tuple: accepts None, a comma-separated string, or a list."""
    if not value:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(item.strip() for item in value if item and item.strip())


def checked_secrets(key: str, value: Any) -> tuple[str, ...]:
    """The secrets of ``key`` as a tuple, refusing a blank one.

    ``None`` or ``""`` means unset. A secret of whitespace only is always a mistake (an
    unquoted shell variable, a stray template): taken as unset it would silently turn off
    what it guards, so the app does not start.
    """
    if not value:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise ConfigurationError(f"{key} must be a string or a list of strings")
    if any(not item.strip() for item in items):
        raise ConfigurationError(
            f"{key} holds an empty or whitespace-only secret: set a real one of {MIN_SECRET_LENGTH}+ characters"
        )
    return tuple(item.strip() for item in items)


def _warn_if_short(key: str, secrets: tuple[str, ...]) -> None:
    """A short push secret still starts (the reference accepts any), with a word about it."""
    if any(len(secret) < MIN_SECRET_LENGTH for secret in secrets):
        log.warning(
            "%s holds a secret shorter than %d characters, the documented minimum; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            key,
            MIN_SECRET_LENGTH,
        )


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


@dataclass(frozen=True)
class SecuritySettings:
    """The subscriber-security settings (tokens, hooks' inputs, per-client quotas)."""

    jwt_secret: tuple[str, ...]
    jwt_public_key: tuple[str, ...]
    jwt_private_key: str | None
    jwt_audience: str | None
    jwt_issuer: str | None
    jwt_leeway: float
    public_channels: tuple[str, ...]
    token_cookie: str | None
    max_streams_per_ip: int
    max_streams_per_token: int
    streams_per_ip_exempt: tuple[str, ...]
    max_query_length: int
    trusted_proxies: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SecuritySettings:
        values = {f.name: config[f"IMPULSE_{f.name.upper()}"] for f in fields(cls)}
        # Secrets and keys are taken whole when given as one string (a PEM holds newlines,
        # a path may hold commas); a list allows rotation.
        secret = values["jwt_secret"]
        values["jwt_secret"] = checked_secrets("IMPULSE_JWT_SECRET", [secret] if isinstance(secret, str) else secret)
        public_key = values["jwt_public_key"]
        values["jwt_public_key"] = _as_tuple([public_key] if isinstance(public_key, str) else public_key)
        values["public_channels"] = _as_tuple(values["public_channels"])
        values["streams_per_ip_exempt"] = _as_tuple(values["streams_per_ip_exempt"])
        values["token_cookie"] = values["token_cookie"] or None
        settings = cls(**values)
        if min(settings.max_streams_per_ip, settings.max_streams_per_token, settings.trusted_proxies) < 0:
            raise ConfigurationError(
                "IMPULSE_MAX_STREAMS_PER_IP, IMPULSE_MAX_STREAMS_PER_TOKEN and IMPULSE_TRUSTED_PROXIES "
                "must not be negative"
            )
        if settings.max_query_length < 1 or settings.jwt_leeway < 0:
            raise ConfigurationError("IMPULSE_MAX_QUERY_LENGTH must be positive and IMPULSE_JWT_LEEWAY not negative")
        return settings
