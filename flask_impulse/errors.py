"""Every exception flask-impulse raises, in one tree under a single root::

    ImpulseError
     +-- Refusal                          a request refused: its status, error, details and
     |    |                               headers are the JSON answer (a 404, 405, 414, a
     |    |                               health token, not ready)
     |    +-- AccessDenied                a check refuses; raise it in a hook (403, or its own
     |    |                               status); adds check and channel to the answer
     |    +-- SubscriptionRefused         a stream that is not opened (400)
     |    |    +-- SubscriptionDenied (AccessDenied)
     |    |    |    |                     a token, grant or authorize hook refuses it (401, 403)
     |    |    |    +-- TooManyStreams    a per-address or per-token quota is full (429)
     |    |    +-- TooManyConnections     the worker is at its limit, or shutting down (503)
     |    +-- PushError (ValueError)      a push that is refused (400, 401, 403, 413, 429)
     |         +-- PushDenied (AccessDenied)
     |         |                          an authorize_push hook refuses it (403)
     |         +-- BackplaneUnavailable   the backplane cannot take the push now (503)
     |         +-- OutcomeUnknown         the backplane may or may not have taken it (503)
     |         +-- InvalidPayload         a payload that is not its channel's type (400)
     +-- TokenRejected                    a subscriber token that does not verify; answered
     |                                    as a SubscriptionDenied (401)
     +-- ConfigurationError (ValueError, RuntimeError)
     |                                    settings or a setup that cannot work
     +-- TypeScriptError (TypeError)      a payload type with no TypeScript counterpart
     +-- ServerClientError                a push over HTTP got a non-2xx answer
     +-- RealtimeClientError              a subscriber's stream failed for good, or missed messages
          +-- MissedMessages              the server could not replay everything since the last id

Refusals are named for what they refuse: a ``SubscriptionRefused`` never opened a stream,
a ``PushError`` sent nothing. ``PushError`` keeps its public name (and its ``ValueError``,
which callers of ``impulse.push`` catch for bad input). ``AccessDenied`` is what a hook
raises on either side; the gatekeeper answers it as the ``SubscriptionDenied`` or
``PushDenied`` of its side, so ``except AccessDenied`` still catches both.
``ConfigurationError`` is a ``ValueError`` because bad settings always raised one, and a
``RuntimeError`` because a setup that cannot work (a missing extra, no app context) did.

The blueprint's one error handler (``views.handle_error``) answers every ``Refusal`` with
``to_json()``, its status and its headers; this module imports no Flask, so the clients can
import it.
"""

from __future__ import annotations

from typing import Any


class ImpulseError(Exception):
    """Root of every flask-impulse exception."""


class Refusal(ImpulseError):
    """A request the service refuses. ``status``, ``error``, ``details`` and ``headers``
    become the HTTP answer; raise it, the blueprint's error handler answers it."""

    status = 400

    def __init__(
        self,
        error: str,
        details: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {details}" if details else error)
        self.error = error
        self.details = details
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.details is not None:
            body["details"] = self.details
        return body


class AccessDenied(Refusal):
    """A subscription or push that a check refuses.

    Raise it in an ``@impulse.authorize`` or ``@impulse.authorize_push`` hook to deny with a
    reason: the client is told which check failed, and the reason only in debug mode.
    ``check`` and ``channel`` join ``error`` in the JSON answer.
    """

    status = 403

    def __init__(
        self,
        reason: str | None = None,
        *,
        error: str = "Forbidden",
        check: str | None = None,
        channel: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error, reason, status=status, headers=headers)
        self.check = check
        self.channel = channel

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        if self.check is not None:
            body["check"] = self.check
        if self.channel is not None:
            body["channel"] = self.channel
        return body


class SubscriptionRefused(Refusal):
    """A stream that is not opened: a query the service cannot take, or a limit reached."""


class SubscriptionDenied(AccessDenied, SubscriptionRefused):
    """A stream that a token, a grant or an ``authorize`` hook refuses."""


class TooManyStreams(SubscriptionDenied):
    """A client past its quota of open streams: it must close some first."""

    status = 429


class TooManyConnections(SubscriptionRefused):
    """A worker at its connection limit, or shutting down: the client should go elsewhere."""

    status = 503


class PushError(Refusal, ValueError):
    """A push that is refused: nothing of it was sent."""


class PushDenied(AccessDenied, PushError):
    """A push that an ``authorize_push`` hook refuses."""


class BackplaneUnavailable(PushError):
    """The backplane (Redis) is down: the push is refused rather than accepted and lost.
    Raised only when nothing was published: a retry cannot duplicate it."""

    status = 503


class OutcomeUnknown(PushError):
    """The backplane stopped answering after the push may have reached it (a timeout, or a
    connection lost while waiting for the answer): it may have been published, or not.

    Retrying with the same idempotency key is safe: a push already published answers as a
    duplicate, and is not delivered twice.
    """

    status = 503


class InvalidPayload(PushError):
    """A payload that is not a value of its channel's declared type. ``details`` names each
    wrong field (``payload.text: Input should be a valid string``)."""

    def __init__(self, details: str) -> None:
        super().__init__("Invalid payload", details)


class TokenRejected(ImpulseError):
    """A subscriber token that does not verify.

    ``error`` is what the client is told ("Invalid token", "Token expired", ...);
    ``reason`` says why, and is shown only in debug mode. Neither ever holds the token.
    """

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(f"{error}: {reason}")
        self.error = error
        self.reason = reason


class ConfigurationError(ImpulseError, ValueError, RuntimeError):
    """flask-impulse is set up in a way that cannot work; the message names the fix."""


class TypeScriptError(ImpulseError, TypeError):
    """A payload type with no TypeScript counterpart; the message names the type and where."""


class ServerClientError(ImpulseError):
    """The service answered a push with a non-2xx status."""

    def __init__(self, status: int, error: str, details: Any = None) -> None:
        super().__init__(f"HTTP {status}: {error}")
        self.status = status
        self.error = error
        self.details = details


class RealtimeClientError(ImpulseError):
    """A subscriber's stream failed: ``status`` is the HTTP answer when there was one.
    Reported through ``RealtimeClient.on_error``; a final one means the client gave up."""

    def __init__(self, message: str, *, status: int | None = None, final: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.final = final


class MissedMessages(RealtimeClientError):
    """The server could not replay every message since the last one received (its history
    no longer holds them): the subscriber should refetch the state it shows."""
