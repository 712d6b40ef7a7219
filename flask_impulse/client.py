"""Clients of the service. No Flask here: a script or a serverless function imports these
with ``requests`` alone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import requests

from .errors import ServerClientError


def _audience(tokens: str | Iterable[str] | None, topic: str | None) -> dict[str, Any] | None:
    audience: dict[str, Any] = {}
    if tokens is not None:
        audience["tokens"] = tokens if isinstance(tokens, str) else list(tokens)
    if topic is not None:
        audience["topic"] = topic
    return audience or None


class ServerClient:
    """Push over HTTP, the Python twin of the official ``createServerClient``.

    ::

        with ServerClient("http://localhost:8080", token=os.environ["REALTIME_SECRET"]) as client:
            client.push("chat:message", {"text": "hi"}, topic="room-42")
    """

    def __init__(self, service_url: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self.service_url = service_url
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def push(
        self,
        channel: str,
        payload: Any,
        tokens: str | Iterable[str] | None = None,
        topic: str | None = None,
    ) -> int:
        """Publish one message; return how many connections it was written to."""
        body: dict[str, Any] = {"channel": channel, "payload": payload}
        audience = _audience(tokens, topic)
        if audience:
            body["audience"] = audience
        return int(self._post(body)["sent"])

    def push_many(self, events: Iterable[Mapping[str, Any]]) -> list[int]:
        """Publish several messages in one request; return what each was written to.

        Each event is a mapping with ``channel``, ``payload`` and optionally ``tokens`` and
        ``topic`` (or an ``audience`` object, as the official client takes it).
        """
        batch = []
        for event in events:
            body: dict[str, Any] = {"channel": event["channel"], "payload": event.get("payload")}
            audience = event.get("audience") or _audience(event.get("tokens"), event.get("topic"))
            if audience:
                body["audience"] = audience
            batch.append(body)
        if not batch:
            return []
        return [int(result["sent"]) for result in self._post(batch)["results"]]

    def _post(self, body: Any) -> dict[str, Any]:
        try:
            response = self._session.post(self.service_url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServerClientError(0, f"cannot reach {self.service_url}: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not response.ok:
            error = answer.get("error") if isinstance(answer, dict) else None
            details = answer.get("details") if isinstance(answer, dict) else None
            raise ServerClientError(response.status_code, error or response.reason or "error", details)
        return answer  # type: ignore[no-any-return]

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
