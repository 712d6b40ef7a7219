"""The standalone service's hot path answers exactly as the blueprint behind it would.

Each request is sent twice to one service: through the hot path (the service's WSGI
entry), and straight to the Flask app behind it. Status, headers and body must agree, an
id aside, which each push gets anew.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from flask import Flask
from werkzeug.test import Client
from werkzeug.wrappers import Response

from flask_impulse.server.service import create_app

from .support.secrets import PUSH_SECRET

pytestmark = pytest.mark.unit

AUTH = {"Authorization": f"Bearer {PUSH_SECRET}"}
ORIGIN = "https://app.example.com"


@pytest.fixture
def service() -> Flask:
    return create_app({"IMPULSE_SECRET": PUSH_SECRET, "IMPULSE_CORS_ORIGINS": ORIGIN, "IMPULSE_MAX_QUERY_LENGTH": 200})


@pytest.fixture
def served_by_flask(service: Flask) -> Iterator[list[str]]:
    """The paths of the requests that went through Flask's request cycle."""
    paths: list[str] = []

    def started(sender: Flask, **extra: Any) -> None:
        paths.append(flask.request.path)

    flask.request_started.connect(started, service)
    yield paths
    flask.request_started.disconnect(started, service)


REQUESTS: dict[str, dict[str, Any]] = {
    "push": {"method": "POST", "json": {"channel": "c", "payload": {"n": 1}}, "headers": AUTH},
    "push from an allowed origin": {
        "method": "POST",
        "json": {"channel": "c", "payload": 1},
        "headers": {**AUTH, "Origin": ORIGIN},
    },
    "push from another origin": {
        "method": "POST",
        "json": {"channel": "c", "payload": 1},
        "headers": {**AUTH, "Origin": "https://evil.example"},
    },
    "batch": {"method": "POST", "json": [{"channel": "a"}, {"channel": "b", "payload": 2}], "headers": AUTH},
    "keyed push": {"method": "POST", "json": {"channel": "c"}, "headers": {**AUTH, "Idempotency-Key": "k-1"}},
    "push without a secret": {"method": "POST", "json": {"channel": "c"}},
    "push with a wrong secret": {"method": "POST", "json": {"channel": "c"}, "headers": {"Authorization": "Bearer x"}},
    "push of bad JSON": {"method": "POST", "data": b"{nope", "headers": {**AUTH, "Content-Type": "application/json"}},
    "push of a bad channel": {"method": "POST", "json": {"channel": "a\u0001b"}, "headers": AUTH},
    "push too large": {"method": "POST", "data": b"x" * 2_000_000, "headers": AUTH},
    "stream with a bad channel": {"method": "GET", "query_string": "channel=a%01b"},
    "stream with a query too long": {"method": "GET", "query_string": "channel=c&pad=" + "x" * 300},
    "stream with a bad Last-Event-ID": {
        "method": "GET",
        "query_string": "channel=c",
        "headers": {"Last-Event-ID": "9" * 65},
    },
}


def answer(app: Any, request: dict[str, Any]) -> tuple[str, list[tuple[str, str]], Any]:
    response = Client(app, Response).open("/", **request)
    body = response.get_data()
    headers = sorted((name, value) for name, value in response.headers.items() if name != "Content-Length")
    parsed = json.loads(body)
    for item in [parsed, *parsed.get("results", ())]:
        item.pop("id", None)
    assert response.headers.get("Content-Length") == str(len(body))
    return response.status, headers, parsed


@pytest.mark.parametrize("name", REQUESTS)
def test_the_hot_path_answers_as_the_blueprint(service: Flask, served_by_flask: list[str], name: str) -> None:
    request = REQUESTS[name]
    hot = answer(service.wsgi_app, request)
    assert served_by_flask == []
    if name == "keyed push":
        # The key was taken by the first: the blueprint answers the same push as a repeat.
        status, headers, body = answer(service.wsgi_app.downstream, request)  # type: ignore[attr-defined]
        assert (status, headers) == hot[:2] and body == {**hot[2], "duplicate": True}
    else:
        assert answer(service.wsgi_app.downstream, request) == hot  # type: ignore[attr-defined]
    assert served_by_flask == ["/"]


def test_a_stream_opens_on_the_hot_path_with_the_blueprints_headers(service: Flask, served_by_flask: list[str]) -> None:
    answers = []
    for app in (service.wsgi_app, service.wsgi_app.downstream):  # type: ignore[attr-defined]
        response = Client(app, Response).get("/", query_string="channel=c", headers={"Origin": ORIGIN})
        first = next(iter(response.response))
        response.close()
        answers.append((response.status, sorted(response.headers.items()), first))
    assert answers[0] == answers[1]
    status, headers, first = answers[0]
    assert status == "200 OK" and ("Content-Type", "text/event-stream") in headers
    assert ("Access-Control-Allow-Origin", ORIGIN) in headers and first.startswith(b": Connected to channel: c")
    assert served_by_flask == ["/"]
    # Closed, each stream let go of its connection.
    assert len(service.extensions["impulse"].broker.connections) == 0


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [("GET", "/health", ""), ("GET", "/", ""), ("OPTIONS", "/", ""), ("PUT", "/", ""), ("GET", "/client.js", "")],
)
def test_every_other_request_goes_through_flask(
    service: Flask, served_by_flask: list[str], method: str, path: str, query: str
) -> None:
    Client(service.wsgi_app, Response).open(path, method=method, query_string=query).close()
    assert served_by_flask == [path]
