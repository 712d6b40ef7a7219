"""The exceptions flask-impulse raises, under a single root::

ImpulseError
 +-- PushError (ValueError)        a push the broker refuses; carries the HTTP status
 |    +-- BackplaneUnavailable     the backplane cannot take the push now (503)
 |    +-- OutcomeUnknown           the backplane may or may not have taken the push (503)
 |    +-- InvalidPayload           a payload that does not match its declared channel type (400)
 |    +-- AccessDenied             a subscription or push refused by a check (401, 403, 429)
 +-- ConfigurationError (RuntimeError)
 +-- ServerClientError             a push over HTTP got a non-2xx answer
 +-- RealtimeClientError           a subscriber's stream failed for good, or missed messages
      +-- MissedMessages           the server could not replay everything since the last id
"""

from __future__ import annotations

from typing import Any


class ImpulseError(Exception):
    """Root of every flask-impulse exception."""


class PushError(ImpulseError, ValueError):
    """A push that is refused. ``status`` and ``error`` become the HTTP answer."""

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


class ConfigurationError(ImpulseError, RuntimeError):
    """flask-impulse is set up in a way that cannot work; the message names the fix."""


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


class AccessDenied(PushError):
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
