"""The push client: ``ServerClient`` and the HTTP helpers of its retries. No Flask, no gevent:
``requests`` alone, so that a script or a serverless function can push."""

from __future__ import annotations

import email.utils
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

import requests

from .. import _json
from ..channels import Push, Tokens, as_push
from ..errors import ServerClientError
from ..validation import check_idempotency_key
from .tls import Verify

#: One logger for every client of the package, whichever module logs.
_LOG = logging.getLogger("flask_impulse.client")

T = TypeVar("T")

P = ParamSpec("P")


def _audience(tokens: str | Iterable[str] | None, topic: str | None) -> dict[str, Any] | None:
    audience: dict[str, Any] = {}
    if tokens is not None:
        audience["tokens"] = tokens if isinstance(tokens, str) else list(tokens)
    if topic is not None:
        audience["topic"] = topic
    return audience or None


def _push_body(message: Push[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": message.channel, "payload": message.payload}
    audience = _audience(message.tokens, message.topic)
    if audience:
        body["audience"] = audience
    return body


def _batch_item(event: Push[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """One push object of a batch, with its own idempotency key (a fresh one unless given)."""
    if isinstance(event, Push):
        body, key = _push_body(event), event.idempotency_key
    else:
        body = {"channel": event["channel"], "payload": event.get("payload")}
        audience = event.get("audience") or _audience(event.get("tokens"), event.get("topic"))
        if audience:
            body["audience"] = audience
        key = event.get("idempotency_key", event.get("idempotencyKey"))
    body["idempotencyKey"] = _key(key)
    return body


def _key(given: str | None) -> str:
    """The idempotency key of one push: the caller's, checked here so that a bad one fails with
    the rule rather than as a transport error, or a fresh one."""
    return check_idempotency_key(given, "idempotency_key") if given is not None else str(uuid.uuid4())


def _quoted(key: str) -> str:
    """``key`` as the structured-field string of the IETF draft's header: a key holding a comma
    or a quote then reaches the service whole (a bare comma reads as two headers)."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class PushResult:
    """The service's answer to one push."""

    #: The message id (empty from a server that issues none).
    id: str
    #: The connections the message was written to; for a duplicate, as counted the first time.
    sent: int
    #: True when the service had already accepted this idempotency key: nothing was delivered
    #: now, and ``id`` and ``sent`` are the first push's (a retry of a push that got through).
    duplicate: bool = False

    @classmethod
    def from_json(cls, answer: Mapping[str, Any]) -> PushResult:
        return cls(str(answer.get("id", "")), int(answer["sent"]), answer.get("duplicate") is True)


#: Answers retried under the same idempotency key: the service's own "retry later" (503), and a
#: proxy's word that it lost the upstream (502, 504), when the push may or may not have run.
RETRIED_STATUSES = frozenset({502, 503, 504})
#: Transport failures retried: the push may not have arrived, or its answer may have been lost.
_RETRIED_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class ServerClient:
    """Push over HTTP, the Python twin of the official ``createServerClient``.

    ::

        with ServerClient("http://localhost:8080", token=os.environ["REALTIME_SECRET"]) as client:
            client.push("chat:message", {"text": "hi"}, topic="room-42")

    Every push carries an idempotency key, a fresh UUID unless the caller gives one, so a push
    whose outcome is unknown (a connection error, a timeout, a ``502``/``503``/``504``) is retried
    under the same key and delivered at most once: up to ``max_attempts`` attempts in all,
    none started later than ``retry_deadline`` seconds after the first, waiting
    ``backoff * 2**(n-1)`` (at most ``max_backoff``, jittered between half of it and all of it, or
    the answer's ``Retry-After`` up to ``max_backoff``) in between. A ``4xx`` is never retried.
    ``verify`` is requests': a CA bundle path (a private CA, a self-signed certificate) or False.
    """

    def __init__(
        self,
        service_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        retry_deadline: float = 30.0,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        verify: Verify = True,
    ) -> None:
        if max_attempts < 1 or retry_deadline < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("max_attempts must be at least 1; retry_deadline, backoff and max_backoff not negative")
        self.service_url = service_url
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_deadline = retry_deadline
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: Attempts made after a first one failed, since this client was created.
        self.retries = 0
        self._session = requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        #: A CA bundle path for a service whose certificate a private CA signed, or False (tests only).
        self.verify = verify
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

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
        """Publish one message; return how many connections it was written to.

        ``channel`` is a name, or a :class:`~flask_impulse.Channel` whose payload type mypy checks.
        ``idempotency_key`` (a fresh UUID when not given) makes a repeat within the service's
        ``IMPULSE_IDEMPOTENCY_TTL`` deliver nothing; :meth:`publish` tells whether it was one.
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
    ) -> PushResult: ...
    @overload
    def publish(self, channel: Callable[P, Push[Any]], *args: P.args, **kwargs: P.kwargs) -> PushResult: ...
    def publish(self, channel: str | Callable[..., Push[Any]], *args: Any, **kwargs: Any) -> PushResult:
        """Like :meth:`push`, but return the whole answer: the message id, and ``duplicate``."""
        message = as_push(channel, args, kwargs)
        key = _key(message.idempotency_key)
        return PushResult.from_json(self._post(_push_body(message), {"Idempotency-Key": _quoted(key)}))

    def push_many(self, events: Iterable[Push[Any] | Mapping[str, Any]]) -> list[int]:
        """Publish several messages in one request; return what each was written to.

        Each event is a :class:`~flask_impulse.Push` (what calling a typed channel returns:
        ``chat_message(payload, topic="room-1")``), or a mapping with ``channel``, ``payload`` and
        optionally ``tokens`` and ``topic`` (or an ``audience`` object, as the official client takes
        it) and ``idempotency_key``. Each event gets its own key, a fresh one unless given.
        """
        return [result.sent for result in self.publish_many(events)]

    def publish_many(self, events: Iterable[Push[Any] | Mapping[str, Any]]) -> list[PushResult]:
        """Like :meth:`push_many`, but return each answer whole (id, sent, duplicate)."""
        batch = [_batch_item(event) for event in events]
        if not batch:
            return []
        return [PushResult.from_json(result) for result in self._post(batch)["results"]]

    def presence(self, channel: str) -> dict[str, Any]:
        """Who is on a presence channel: ``{"channel", "connections", "memberCount", "members"}``
        (docs/presence.md). Not retried: a read the caller may simply repeat."""
        url = self.service_url.rstrip("/") + "/presence"
        try:
            response = self._session.get(url, params={"channel": channel}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServerClientError(0, f"cannot reach {url}: {exc}") from exc
        return _answer(response)

    def _post(self, body: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """POST ``body``, retrying what may not have gone through; the idempotency keys in
        ``body`` and ``headers`` make every attempt the same push."""
        data = _json.dumps(body)  # ours, not requests': it writes dataclass payloads and refuses NaN
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                # verify per request: a session's own is overridden by REQUESTS_CA_BUNDLE, a request's is not.
                response = self._session.post(
                    self.service_url, data=data, headers=headers, timeout=self.timeout, verify=self.verify
                )
            except requests.exceptions.SSLError as exc:  # a certificate does not mend itself
                raise ServerClientError(0, f"cannot reach {self.service_url}: {exc}") from exc
            except _RETRIED_ERRORS as exc:
                failure = ServerClientError(0, f"cannot reach {self.service_url}: {exc}")
                failure.__cause__ = exc
            except requests.RequestException as exc:  # a bad URL, say: retrying cannot help
                raise ServerClientError(0, f"cannot reach {self.service_url}: {exc}") from exc
            else:
                if response.status_code not in RETRIED_STATUSES:
                    return _answer(response)
                failure = _refusal(response)
                retry_after = _retry_after(response.headers.get("Retry-After"))
            delay = self._delay(attempt, retry_after)
            if attempt >= self.max_attempts or time.monotonic() + delay - started > self.retry_deadline:
                raise failure
            self.retries += 1
            _LOG.info("push failed (%s); retry %d in %.2f s under the same idempotency key", failure, attempt, delay)
            time.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, so that publishers who failed together come back apart;
        the service's ``Retry-After`` when it asks for longer, up to ``max_backoff`` still."""
        backoff = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after is None:
            return backoff
        return max(backoff, min(retry_after, self.max_backoff))

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _answer(response: requests.Response) -> dict[str, Any]:
    if not response.ok:
        raise _refusal(response)
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    return answer  # type: ignore[no-any-return]


def _refusal(response: requests.Response) -> ServerClientError:
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    error = answer.get("error") if isinstance(answer, dict) else None
    details = answer.get("details") if isinstance(answer, dict) else None
    return ServerClientError(response.status_code, error or response.reason or "error", details)


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
