"""The Flask extension: configuration, the per-app broker, and in-process publishing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from flask import Blueprint, Flask, current_app, has_app_context

from . import metrics
from .broker import Backplane, Broker, MemoryBackplane, Published
from .channels import Channel, Push, Tokens, as_push
from .config import DEFAULTS, SecuritySettings, Settings
from .console import Console
from .console import create_blueprint as create_console_blueprint
from .errors import ConfigurationError
from .presence import Presence

if TYPE_CHECKING:
    from .broker.presence_store import RedisPresence
from .security import redaction
from .security.access import Gatekeeper, PublishHook, SubscribeHook
from .security.cors import cors_options
from .security.ratelimit import PushRateLimiter
from .security.tokens import issue_token
from .signals import PushRecord, pushed
from .state import EXTENSION_KEY, ImpulseState
from .validation import check_idempotency_key, check_name, parse_tokens, parse_topic
from .views import create_blueprint

T = TypeVar("T")
P = ParamSpec("P")
Hook = TypeVar("Hook", SubscribeHook, PublishHook)


class Impulse:
    """Realtime updates over Server-Sent Events for a Flask app.

    ::

        impulse = Impulse(app)            # or Impulse() and impulse.init_app(app)
        app.register_blueprint(impulse.blueprint, url_prefix="/realtime")
        impulse.push("chat:message", {"text": "hi"})

    Keyword options become defaults for the matching ``IMPULSE_*`` config keys
    (``Impulse(secret="...")`` sets ``IMPULSE_SECRET`` unless the app config already does).
    ``channels`` declares typed channels (see :meth:`channel`).
    """

    def __init__(self, app: Flask | None = None, *, channels: Iterable[Channel[Any]] = (), **options: Any) -> None:
        unknown = [name for name in options if f"IMPULSE_{name.upper()}" not in DEFAULTS]
        if unknown:
            raise TypeError(f"unknown Impulse options: {', '.join(sorted(unknown))}")
        self._options = {f"IMPULSE_{name.upper()}": value for name, value in options.items()}
        self.blueprint: Blueprint = create_blueprint()
        # Its routes exist always and answer 404 until IMPULSE_CONSOLE_TOKEN is set.
        self.blueprint.register_blueprint(create_console_blueprint())
        self._subscribe_hooks: list[SubscribeHook] = []
        self._publish_hooks: list[PublishHook] = []
        # The state of every app this extension is set up on. push() outside any app context
        # (from a greenlet) uses it when there is exactly one; with several, it needs a context.
        self._apps: list[ImpulseState] = []
        #: Declared channels by name: pushes on them are validated, and they make the TypeScript types.
        self.channels: dict[str, Channel[Any]] = {}
        for declared in channels:
            self.channel(declared)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("An Impulse instance is already registered on this app: call init_app once per app.")
        for key, default in DEFAULTS.items():
            app.config.setdefault(key, self._options.get(key, default))
        settings = Settings.from_config(app.config)
        security = SecuritySettings.from_config(app.config)
        # Before anything can log: no record of this process may show a secret or a token.
        redaction.install()
        redaction.add_known_secrets(_secret_values(settings, security))
        if settings.metrics_path:
            metrics.enable()
        token_hash_key = _token_hash_key(settings)  # checked before a backplane is built
        backplane = self.create_backplane(settings)
        broker = Broker(
            backplane,
            token_hash_key=token_hash_key,
            max_connections=settings.max_connections,
            queue_max_messages=settings.queue_max_messages,
            queue_max_bytes=settings.queue_max_bytes,
            drain_window=settings.drain_window,
            retry_ms=settings.retry_ms,
        )
        gatekeeper = Gatekeeper(
            security,
            max_token_length=settings.max_token_length,
            token_key=broker.audience_key,
            subscribe_hooks=self._subscribe_hooks,
            publish_hooks=self._publish_hooks,
        )
        cors = cors_options(self.blueprint, settings.cors_origins, settings.cors_credentials)
        limiter = PushRateLimiter(settings.push_rate_limit) if settings.push_rate_limit else None
        presence = Presence(
            settings.presence_channels, settings.presence_max_members, _presence_store(settings, backplane)
        )
        console = Console(settings.console_token, broker, presence) if settings.console_token else None
        state = ImpulseState(settings, broker, cors, gatekeeper, presence, self.channels, limiter, console)
        if settings.validate_payloads:
            for declared in self.channels.values():
                declared.prepare_validation()
        app.extensions[EXTENSION_KEY] = state
        self._apps.append(state)
        if console is not None:
            console.start()

    def create_backplane(self, settings: Settings) -> Backplane:
        """In memory for one process; Redis (``IMPULSE_REDIS_URL``) for many workers and replicas."""
        if settings.redis_url:
            from .broker.redis import RedisBackplane

            return RedisBackplane(
                settings.redis_url,
                history_size=settings.history_size,
                history_ttl=settings.history_ttl,
                prefix=settings.redis_prefix,
                sent_timeout=settings.redis_sent_timeout,
                max_connections=settings.redis_max_connections,
                retry_ms=settings.retry_ms,
                idempotency_ttl=settings.idempotency_ttl,
                history_max_bytes=settings.history_max_bytes,
            )
        return MemoryBackplane(
            settings.history_size,
            settings.history_ttl,
            settings.history_max_bytes,
            idempotency_ttl=settings.idempotency_ttl,
            idempotency_max_keys=settings.idempotency_max_keys,
        )

    # -- channels ----------------------------------------------------------------------------
    @overload
    def channel(self, channel: Channel[T], /) -> Channel[T]: ...
    @overload
    def channel(self, name: str, payload_type: type[T], /) -> Channel[T]: ...
    @overload
    def channel(self, name: str, payload_type: object = ..., /) -> Channel[Any]: ...
    def channel(self, name: str | Channel[Any], payload_type: object = Any, /) -> Channel[Any]:
        """Declare a typed channel (or register one declared elsewhere) and return it.

        Pushes on a declared channel, in-process or over HTTP, are checked against its payload
        type (``IMPULSE_VALIDATE_PAYLOADS``), and ``flask impulse typescript`` emits its type.
        """
        declared = name if isinstance(name, Channel) else Channel(name, payload_type)
        known = self.channels.get(declared.name)
        if known is not None and known != declared:
            raise ConfigurationError(f"channel {declared.name!r} is already declared as {known!r}")
        if any(state.settings.validate_payloads for state in self._apps):
            declared.prepare_validation()
        self.channels[declared.name] = declared
        return known or declared

    # -- access ----------------------------------------------------------------------------
    def authorize(self, hook: SubscribeHook) -> SubscribeHook:
        """Decorate a function that decides whether a stream may open, asked once per channel
        with a ``SubscribeRequest``. It allows by returning ``True``, or a subject (a non-empty
        string: who the stream is, its member id on presence channels); returning anything else
        or raising ``AccessDenied(reason)`` answers 403. Every hook must allow, and the hooks
        that name a subject must name the same one."""
        return self._register(self._subscribe_hooks, hook)

    def authorize_push(self, hook: PublishHook) -> PublishHook:
        """Like :meth:`authorize`, for each push of an HTTP push request (``PublishRequest``),
        after the push secret is checked. In-process :meth:`push` is not asked."""
        return self._register(self._publish_hooks, hook)

    @staticmethod
    def _register(hooks: list[Hook], hook: Hook) -> Hook:
        if not callable(hook):
            raise TypeError("an authorize hook must be a function taking one request argument")
        hooks.append(hook)
        return hook

    def issue_token(
        self,
        subject: str,
        channels: Sequence[str],
        topics: Sequence[str] | None = None,
        ttl: float = 3600,
        **claims: Any,
    ) -> str:
        """A signed subscriber token for ``subject``: it may subscribe to ``channels`` (``*``
        wildcards, e.g. ``chat:*``) and, when given, only with one of ``topics``; it expires
        after ``ttl`` seconds, and streams opened with it close then. Pushes reach its holder
        when they name ``subject`` in ``audience.tokens``."""
        gatekeeper = self.state.gatekeeper
        keys, settings = gatekeeper.keys, gatekeeper.settings
        if keys.signing_key is None or keys.signing_algorithm is None:
            raise ConfigurationError("issue_token() needs IMPULSE_JWT_SECRET or IMPULSE_JWT_PRIVATE_KEY")
        return issue_token(
            subject,
            key=keys.signing_key,
            algorithm=keys.signing_algorithm,
            channels=channels,
            topics=topics,
            ttl=ttl,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            claims=claims,
        )

    # -- publishing ------------------------------------------------------------------------
    @overload
    def push(
        self,
        channel: str,
        payload: Any,
        tokens: Tokens = None,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> int: ...
    @overload
    def push(self, channel: Callable[P, Push[Any]], *args: P.args, **kwargs: P.kwargs) -> int: ...
    def push(self, channel: str | Callable[..., Push[Any]], *args: Any, **kwargs: Any) -> int:
        """Publish to ``channel``; return the number of connections the message was written to.

        Routes exactly as ``POST`` does: ``topic`` limits it to subscribers of that topic,
        ``tokens`` to subscribers holding one of them. Never blocks on slow subscribers.
        ``channel`` is a name, or a :class:`Channel` whose payload type mypy then checks.
        A payload that does not match a declared channel raises :class:`InvalidPayload`.
        With ``idempotency_key``, a repeat of the key within ``IMPULSE_IDEMPOTENCY_TTL`` delivers
        nothing and returns what the first push returned; :meth:`publish` tells the two apart.
        """
        return self.publish(channel, *args, **kwargs).sent

    @overload
    def publish(
        self,
        channel: str,
        payload: Any,
        tokens: Tokens = None,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Published: ...
    @overload
    def publish(self, channel: Callable[P, Push[Any]], *args: P.args, **kwargs: P.kwargs) -> Published: ...
    def publish(self, channel: str | Callable[..., Push[Any]], *args: Any, **kwargs: Any) -> Published:
        """Like :meth:`push`, but returns the message id too, and ``duplicate``: True when the
        idempotency key was seen within the TTL (the id and ``sent`` are then the first push's)."""
        message = as_push(channel, args, kwargs)
        state = self.state
        settings = state.settings
        check_name(message.channel, "channel", settings.max_channel_length)
        key = message.idempotency_key
        if key is not None:
            check_idempotency_key(key, "idempotency_key")
        tokens = message.tokens
        # Any iterable, an empty one too (it reaches nobody, as ``"tokens": []`` does).
        token_list = parse_tokens(tokens if tokens is None or isinstance(tokens, str) else list(tokens), settings)
        topic = parse_topic(message.topic, settings)
        declared = state.channels.get(message.channel)
        if declared is not None and settings.validate_payloads:
            declared.validate(message.payload)
        draft = state.broker.draft(message.channel, message.payload, token_list, topic, key)
        published = state.broker.publish(draft)
        if pushed.receivers:  # the record is built only when someone listens
            record = PushRecord(
                message.channel,
                message.payload,
                token_list,
                topic,
                published.id,
                published.sent,
                key,
                published.duplicate,
            )
            pushed.send(current_app._get_current_object() if has_app_context() else None, push=record)  # type: ignore[attr-defined]
        return published

    def presence(self, channel: str) -> dict[str, Any]:
        """Who is on ``channel``: what ``GET BASE/presence`` answers (docs/presence.md), this
        process's count in memory, the cluster's with Redis. A channel under no presence
        pattern raises a 404 ``Refusal``, Redis not answering a 503 one."""
        return self.state.presence.snapshot(channel)

    @property
    def state(self) -> ImpulseState:
        """This extension's state for the current app (or its only app, outside a context)."""
        if has_app_context():
            try:
                return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
            except KeyError:
                raise ConfigurationError("Impulse is not initialised on this app: call init_app(app)") from None
        if len(self._apps) == 1:
            return self._apps[0]
        raise ConfigurationError(
            "push() outside an app context needs an extension set up on exactly one app; use `with app.app_context():`"
        )


def _secret_values(settings: Settings, security: SecuritySettings) -> list[str | None]:
    """Every configured value that must never be logged; of a PEM key, its lines of key material."""
    pem_lines = (security.jwt_private_key or "").splitlines()
    return [
        *settings.secrets,
        settings.health_token,
        settings.console_token,
        settings.token_hash_key,
        *security.jwt_secret,
        *(line for line in pem_lines if not line.startswith("-----")),
    ]


def _presence_store(settings: Settings, backplane: Backplane) -> RedisPresence | None:
    """With the Redis backplane and presence on, the keys where every process's counts meet."""
    if not settings.presence_channels:
        return None
    from .broker.redis import RedisBackplane

    if not isinstance(backplane, RedisBackplane):
        return None
    from .broker.presence_store import RedisPresence

    return RedisPresence(backplane.client, settings.redis_prefix, settings.presence_refresh)


def _token_hash_key(settings: Settings) -> bytes:
    """The key for hashing subscriber tokens. It must agree across every process that shares
    a backplane, so it is configured or derived from the push secret; otherwise random."""
    if settings.token_hash_key:
        return hashlib.sha256(settings.token_hash_key.encode()).digest()
    if settings.secrets:
        return hashlib.sha256(b"flask-impulse token hash key\0" + settings.secrets[0].encode()).digest()
    if settings.redis_url:
        raise ConfigurationError(
            "With IMPULSE_REDIS_URL, every process must hash subscriber tokens with the same key: "
            "set IMPULSE_TOKEN_HASH_KEY (or IMPULSE_SECRET, from which it is derived) to the same value everywhere"
        )
    return os.urandom(32)
