"""Who may subscribe to what, and who may push what: tokens, grants, hooks and quotas.

Every check runs before a stream opens, once per channel of a multi-channel stream, so a
refused request never sees a byte of a channel it may not read, replayed history included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gevent
from flask import Request, current_app

from .._missing import MISSING
from ..broker import Connection
from ..config import SecuritySettings
from ..errors import AccessDenied, PushDenied, SubscriptionDenied, TokenRejected
from ..validation import INVALID_QUERY_PARAMETER, PushRequest, check_name, query_value
from .quotas import StreamQuotas
from .tokens import Grant, TokenKeys, TokenVerifier, matches


@dataclass(frozen=True)
class SubscribeRequest:
    """What an ``@impulse.authorize`` hook is asked about: one channel of a stream."""

    channel: str
    topic: str | None
    #: The token as presented (``?token=``, ``Authorization: Bearer`` or the cookie), or None.
    token: str | None
    #: JWT mode: the verified ``sub`` claim and every claim; None otherwise.
    subject: str | None
    claims: Mapping[str, Any] | None
    request: Request = field(repr=False)


@dataclass(frozen=True)
class PublishRequest:
    """What an ``@impulse.authorize_push`` hook is asked about: one push of an HTTP request."""

    channel: str
    topic: str | None
    tokens: tuple[str, ...] | None
    #: None when the push carries no payload key.
    payload: Any
    request: Request = field(repr=False)


#: A hook allows by returning True; anything else, or raising ``AccessDenied``, denies. A
#: subscribe hook may also allow by returning a subject, a non-empty string: the identity
#: the stream counts under on presence channels (docs/presence.md).
SubscribeHook = Callable[[SubscribeRequest], bool | str]
PublishHook = Callable[[PublishRequest], bool]


class Admission:
    """A stream let in: whom it is for, until when, and the quota it holds until released."""

    __slots__ = ("_connection", "_release_quota", "_timer", "audience", "expires_at", "identity", "trusts_client_id")

    def __init__(
        self,
        audience: str | None,
        expires_at: float | None,
        release_quota: Callable[[], None],
        *,
        identity: str | None = None,
        trusts_client_id: bool = True,
    ) -> None:
        #: What the broker hashes into the connection's audience key: the token, or in JWT
        #: mode the token's subject, so that pushes name subjects in audience.tokens.
        self.audience = audience
        self.expires_at = expires_at
        #: Who the stream is, as the service vouches for it: the subject an authorize hook
        #: returned, else the verified token's subject.
        self.identity = identity
        #: Whether a ``clientId`` the client names may stand in when nobody vouches (not in
        #: JWT mode, where it would let anyone pose as anyone).
        self.trusts_client_id = trusts_client_id
        self._release_quota = release_quota
        self._timer: Any = None
        self._connection: Connection | None = None

    def member(self, client_id: str | None) -> str | None:
        """The stream's identity on presence channels (docs/presence.md)."""
        if self.identity is not None or not self.trusts_client_id:
            return self.identity
        return client_id

    def watch(self, connection: Connection) -> None:
        """Close ``connection`` when its token expires: a libev timer, no greenlet per stream."""
        if self.expires_at is not None:
            self._connection = connection
            self._expire_or_wait()

    def _expire_or_wait(self) -> None:
        # libev counts from its cached loop time, which may lag: a timer can fire a little
        # before the wall clock reaches exp. It then waits out the rest, so that a stream is
        # never closed while its token would still verify.
        assert self.expires_at is not None and self._connection is not None
        remaining = self.expires_at - time.time()
        if remaining <= 0:
            self._timer = None
            self._connection.close("token expired")
            return
        self._timer = gevent.get_hub().loop.timer(remaining + 0.001)
        self._timer.start(self._expire_or_wait)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._connection = None
        self._release_quota()


class Gatekeeper:
    """The checks of one app, in order: token, grant, quotas, hooks."""

    def __init__(
        self,
        settings: SecuritySettings,
        *,
        max_token_length: int,
        token_key: Callable[[str], bytes],
        subscribe_hooks: Sequence[SubscribeHook],
        publish_hooks: Sequence[PublishHook],
    ) -> None:
        self.settings = settings
        keys = TokenKeys.load(settings.jwt_secret, settings.jwt_public_key, settings.jwt_private_key)
        self.keys = keys
        self.verifier = (
            TokenVerifier(
                keys,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway,
                max_length=max_token_length,
            )
            if keys
            else None
        )
        self.max_token_length = max_token_length
        self.quotas = StreamQuotas(
            settings.max_streams_per_ip, settings.max_streams_per_token, exempt=settings.streams_per_ip_exempt
        )
        self._token_key = token_key
        # The extension's own lists: hooks decorated after init_app still apply.
        self._subscribe_hooks = subscribe_hooks
        self._publish_hooks = publish_hooks

    @property
    def jwt_mode(self) -> bool:
        return self.verifier is not None

    # -- subscribers ----------------------------------------------------------------------
    def admit(self, channels: Sequence[str], topic: str | None, request: Request) -> Admission:
        """Let a stream in, or raise ``SubscriptionDenied`` (401, 403 or 429) naming the check.

        The cheap checks come first: token and grant, then quotas, and the hooks (which may
        ask a database) last, so that a flood past its quota costs the app nothing.
        """
        token = self.presented_token(request)
        grant = self._verify(token) if self.verifier is not None and token is not None else None
        if self.verifier is not None:
            for channel in channels:
                self._check_grant(grant, channel, topic)
        # JWT mode keys a stream by its token's subject (none without a token), else by the token.
        audience = token if self.verifier is None else grant.subject if grant is not None else None
        release = self.quotas.acquire(request.remote_addr, self._token_key(audience) if audience else None)
        try:
            subject = None
            for channel in channels:
                named = self._run_subscribe_hooks(channel, topic, token, grant, request)
                subject = _agreed(subject, named, channel)
        except BaseException:
            release()
            raise
        return Admission(
            audience,
            grant.expires_at if grant is not None else None,
            release,
            identity=subject if subject is not None else grant.subject if grant is not None else None,
            trusts_client_id=self.verifier is None and subject is None,
        )

    def presented_token(self, request: Request) -> str | None:
        """The subscriber's token: ``?token=`` (EventSource cannot set headers), else an
        ``Authorization: Bearer`` header, else the token cookie."""
        token = query_value(request, "token") or None
        if token is not None:
            return check_name(token, "the token query parameter", self.max_token_length, INVALID_QUERY_PARAMETER)
        # From the environ: werkzeug's header look-up raises and catches a KeyError per miss.
        scheme, _, credentials = request.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return check_name(credentials.strip(), "the bearer token", self.max_token_length, "Invalid request")
        if self.settings.token_cookie and "HTTP_COOKIE" in request.environ:
            token = request.cookies.get(self.settings.token_cookie) or None
            if token is not None:
                return check_name(token, "the token cookie", self.max_token_length, "Invalid request")
        return None

    def _verify(self, token: str) -> Grant:
        assert self.verifier is not None
        try:
            return self.verifier.verify(token)
        except TokenRejected as exc:
            raise _denied(SubscriptionDenied, exc.error, exc.reason, check="token", status=401) from None

    def _check_grant(self, grant: Grant | None, channel: str, topic: str | None) -> None:
        if any(matches(pattern, channel) for pattern in self.settings.public_channels):
            return
        if grant is None:
            raise _denied(
                SubscriptionDenied,
                "Token required",
                "this channel is not public: present a token (?token=, Authorization: Bearer, or the cookie)",
                check="token",
                channel=channel,
                status=401,
            )
        if not grant.allows_channel(channel):
            raise _denied(
                SubscriptionDenied,
                "Forbidden",
                "the token's channels claim does not cover this channel",
                "channel",
                channel,
            )
        if not grant.allows_topic(topic):
            raise _denied(
                SubscriptionDenied, "Forbidden", "the token's topics claim does not cover this topic", "topic", channel
            )

    def _run_subscribe_hooks(
        self, channel: str, topic: str | None, token: str | None, grant: Grant | None, request: Request
    ) -> str | None:
        """Ask every hook about one channel; the subject they named, if any."""
        if not self._subscribe_hooks:
            return None
        subscription = SubscribeRequest(
            channel,
            topic,
            token,
            grant.subject if grant is not None else None,
            grant.claims if grant is not None else None,
            _unproxied(request),
        )
        subject = None
        for hook in self._subscribe_hooks:
            subject = _agreed(subject, _ask(hook, subscription, "authorize", channel, SubscriptionDenied), channel)
        return subject

    # -- publishers -------------------------------------------------------------------------
    def check_pushes(self, pushes: Sequence[PushRequest], request: Request) -> None:
        """Ask every ``authorize_push`` hook about every push of a request, before any is sent:
        one refusal refuses the whole batch."""
        if not self._publish_hooks:
            return
        request = _unproxied(request)
        for push in pushes:
            publish = PublishRequest(
                push.channel, push.topic, push.tokens, None if push.payload is MISSING else push.payload, request
            )
            for hook in self._publish_hooks:
                _ask(hook, publish, "authorize_push", push.channel, PushDenied)


def _unproxied(request: Request) -> Request:
    """The request itself rather than Flask's context-local proxy: a hook may keep it."""
    get_object = getattr(request, "_get_current_object", None)
    return get_object() if get_object is not None else request


def _ask(
    hook: Callable[[Any], bool | str], question: Any, kind: str, channel: str, denial: type[AccessDenied]
) -> str | None:
    """A hook's verdict: None or, from a subscribe hook, the subject it allowed; a denial, its
    own ``AccessDenied`` included, is answered as ``denial``."""
    check = f"{kind}:{getattr(hook, '__name__', type(hook).__name__)}"
    try:
        answer = hook(question)
    except AccessDenied as exc:
        raise _denied(denial, exc.error, exc.details or "the hook denied it", check, channel, exc.status) from None
    if answer is True:
        return None
    if denial is SubscriptionDenied and isinstance(answer, str) and answer:
        # The subject reaches presence answers and events: held to a channel name's rules.
        return check_name(answer, "the subject an authorize hook returned", MAX_SUBJECT_LENGTH, "Invalid subject")
    expected = "True or a subject" if denial is SubscriptionDenied else "True"
    raise _denied(denial, "Forbidden", f"the hook returned {type(answer).__name__}, not {expected}", check, channel)


#: Longest subject a hook may name (a presence member id).
MAX_SUBJECT_LENGTH = 256


def _agreed(subject: str | None, named: str | None, channel: str) -> str | None:
    """One stream has one identity: every hook that names a subject, on every channel, names the same."""
    if named is None or subject is None or named == subject:
        return subject if named is None else named
    raise _denied(SubscriptionDenied, "Forbidden", "the authorize hooks named different subjects", "authorize", channel)


def _denied(
    denial: type[AccessDenied], error: str, reason: str, check: str, channel: str | None = None, status: int = 403
) -> AccessDenied:
    """The refusal a client sees, named for its side (``SubscriptionDenied`` or ``PushDenied``):
    which check failed, and why only in debug mode."""
    headers = {"WWW-Authenticate": 'Bearer realm="impulse"'} if status == 401 else None
    details = reason if current_app.debug else None
    return denial(details, error=error, check=check, channel=channel, status=status, headers=headers)
