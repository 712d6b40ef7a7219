"""Security headers on every answer (``IMPULSE_SECURITY_HEADERS``, ``HELMET_ENABLED``), and one
place per file: the browser client only at ``BASE/client.js`` and ``BASE/client.d.ts``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
from flask import Flask

from flask_impulse import Impulse
from flask_impulse.server.service import create_app
from tests.support import secrets
from tests.support.server import LiveServer
from tests.support.streams import raw_exchange

PUSH_SECRET = secrets.ROTATING_PUSH_SECRETS[0]
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}
Headers = dict[str, str]


@pytest.fixture(scope="module")
def service() -> Iterator[LiveServer]:
    env = {"REALTIME_SECRET": PUSH_SECRET, "HEALTH_CHECK_TOKEN": secrets.HEALTH_TOKEN}
    with LiveServer("wsgi:app", env=env, name="security-headers") as server:
        yield server


def raw_head(server: LiveServer, request: bytes, timeout: float = 10) -> tuple[int, Headers]:
    """The status and headers of the answer to raw ``request`` bytes."""
    status, headers, _ = raw_exchange(server.port, request, timeout)
    return status, headers


def _get(path: str, **kwargs: object) -> Callable[[LiveServer], tuple[int, Headers]]:
    def send(server: LiveServer) -> tuple[int, Headers]:
        with requests.get(server.url + path, timeout=10, stream=True, **kwargs) as answer:  # type: ignore[arg-type]
            return answer.status_code, {name.lower(): value for name, value in answer.headers.items()}

    return send


def _push(secret: str | None) -> Callable[[LiveServer], tuple[int, Headers]]:
    def send(server: LiveServer) -> tuple[int, Headers]:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        answer = requests.post(server.url + "/", json={"channel": "c", "payload": 1}, headers=headers, timeout=10)
        return answer.status_code, {name.lower(): value for name, value in answer.headers.items()}

    return send


def _raw(request: bytes) -> Callable[[LiveServer], tuple[int, Headers]]:
    return lambda server: raw_head(server, request)


#: Every kind of answer: (how to get it, its status, its Cache-Control).
ANSWERS = {
    "stream": (_get("/?channel=c"), 200, "no-cache"),
    "push": (_push(PUSH_SECRET), 200, "no-store"),
    "push without a secret (401)": (_push(None), 401, "no-store"),
    "push with a wrong secret (403)": (_push(secrets.UNKNOWN_PUSH_SECRET), 403, "no-store"),
    "preflight": (lambda server: _options(server), 204, "no-store"),
    "health": (_get("/health", params={"token": secrets.HEALTH_TOKEN}), 200, "no-store"),
    "health without its token (401)": (_get("/health"), 401, "no-store"),
    "not found": (_get("/nowhere"), 404, "no-store"),
    "bad stream request (400)": (_get("/"), 400, "no-store"),
    "a method no route takes (TRACE, 405)": (_raw(b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n"), 405, "no-store"),
    "browser client module": (_get("/client.js"), 200, "public, max-age=300"),
    "browser client types": (_get("/client.d.ts"), 200, "public, max-age=300"),
    "gunicorn's refusal (400, from the worker)": (_raw(b"GARBAGE\r\n\r\n"), 400, "no-store"),
    "request line too long (414, from the worker)": (
        _raw(b"GET /?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        414,
        "no-store",
    ),
}


def _options(server: LiveServer) -> tuple[int, Headers]:
    answer = requests.options(server.url + "/", headers={"Origin": "https://site.example"}, timeout=10)
    return answer.status_code, {name.lower(): value for name, value in answer.headers.items()}


@pytest.mark.parametrize("kind", list(ANSWERS))
def test_every_answer_carries_the_security_headers(service: LiveServer, kind: str) -> None:
    send, status, cache_control = ANSWERS[kind]
    got_status, headers = send(service)
    assert got_status == status
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, headers)
    assert headers.get("cache-control") == cache_control


@pytest.mark.parametrize(
    ("env", "config"),
    [
        ({"HELMET_ENABLED": "false"}, {}),
        ({}, {"IMPULSE_SECURITY_HEADERS": False}),
        ({"IMPULSE_SECURITY_HEADERS": "0"}, {}),
    ],
    ids=["HELMET_ENABLED=false", "IMPULSE_SECURITY_HEADERS=False", "IMPULSE_SECURITY_HEADERS=0 (environment)"],
)
def test_security_headers_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], config: dict[str, object]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = create_app({"IMPULSE_SECRET": PUSH_SECRET, **config}).test_client()
    for answer in (client.get("/health"), client.get("/"), client.open("/", method="TRACE")):
        assert not set(SECURITY_HEADERS) & {name.lower() for name, _ in answer.headers.items()}
        assert answer.headers.get("Cache-Control") != "no-store"


def test_helmet_enabled_true_keeps_them_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELMET_ENABLED", "true")
    answer = create_app({"IMPULSE_SECRET": PUSH_SECRET}).test_client().get("/health")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.live
def test_the_worker_leaves_the_headers_off_when_the_app_turns_them_off() -> None:
    env = {"REALTIME_SECRET": PUSH_SECRET, "HELMET_ENABLED": "false"}
    with LiveServer("wsgi:app", env=env, name="no-security-headers") as server:
        status, headers = raw_head(server, b"GARBAGE\r\n\r\n")
    assert status == 400
    assert not set(SECURITY_HEADERS) & set(headers)


def test_an_embedded_app_gets_the_headers_only_on_the_blueprint() -> None:
    app = Flask(__name__)
    app.config["IMPULSE_SECRET"] = PUSH_SECRET
    impulse = Impulse(app)
    app.register_blueprint(impulse.blueprint, url_prefix="/realtime")
    app.add_url_rule("/page", "page", lambda: "<p>the app's own page</p>")
    client = app.test_client()
    assert client.get("/realtime/health").headers["X-Frame-Options"] == "DENY"
    page = client.get("/page")
    assert page.status_code == 200
    assert not set(SECURITY_HEADERS) & {name.lower() for name, _ in page.headers.items()}


# -- one place per file ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/static/client.js", "/static/client.d.ts"])
def test_the_standalone_service_has_no_static_route(path: str) -> None:
    answer = create_app({"IMPULSE_SECRET": PUSH_SECRET}).test_client().get(path)
    assert answer.status_code == 404
    assert answer.json == {"error": "Not found"}


@pytest.mark.parametrize(
    ("path", "content_type"), [("/client.js", "text/javascript"), ("/client.d.ts", "application/typescript")]
)
def test_the_browser_client_is_served_at_the_base_with_its_type_and_cors(path: str, content_type: str) -> None:
    client = create_app({"IMPULSE_SECRET": PUSH_SECRET}).test_client()
    with client.get(path, headers={"Origin": "https://a.example"}) as answer:
        assert answer.status_code == 200
        assert answer.mimetype == content_type
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
