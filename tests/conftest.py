"""Fixtures and tiers for the whole suite.

Tiers are markers (registered in pyproject.toml, ``--strict-markers``): ``live`` (a gunicorn
server), ``redis``, ``nginx``, ``browser`` (Chromium), ``node`` (the official npm client),
``tool`` (mypy or our CLI in a subprocess).
A module marks what it needs with ``pytestmark``; a test that takes one of this file's
fixtures is marked by :func:`pytest_collection_modifyitems`. Every test left with no tier
marker is ``unit``: in-process, and held to it, since a unit test that starts a process fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.support import isolation
from tests.support.apps import make_app
from tests.support.redis import RedisServer
from tests.support.secrets import PUSH_SECRET, leaks, secret_values
from tests.support.server import LOG_DIR, LiveServer

if TYPE_CHECKING:
    from tests.support.browser import Page

SECRET = PUSH_SECRET

TIERS = ("live", "redis", "nginx", "browser", "node", "tool")
#: The tier each shared fixture puts its tests in.
FIXTURE_TIERS = {
    "standalone": "live",
    "embedded": "live",
    "service": "live",
    "redis_server": "redis",
    "open_page": "browser",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            if name in FIXTURE_TIERS:
                item.add_marker(FIXTURE_TIERS[name])
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker("unit")


def _no_process(*args: object, **kwargs: object) -> None:
    raise AssertionError("a unit test started a process: mark the test, or its module, with the tier it needs")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _in_process_if_unit(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _in_process_if_unit(item))


def _in_process_if_unit(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("unit") is None:
        return (yield)
    popen, subprocess.Popen = subprocess.Popen, _no_process  # type: ignore[assignment,misc]
    try:
        return (yield)
    finally:
        subprocess.Popen = popen  # type: ignore[misc]


#: Seconds a greenlet a test started may take to end on its own (the package's longest timer
#: is a graceful write's, one second).
GREENLET_GRACE = 3.0


@pytest.fixture(autouse=True)
def isolated() -> Iterator[None]:
    """Each test starts from fresh globals, and fails if it leaves a stream open or a greenlet
    running. In-process only: a server in a subprocess keeps its own."""
    isolation.reset_globals()
    connections = isolation.open_connections()
    with isolation.spawned_greenlets() as spawned:
        yield
    leaked_greenlets = isolation.still_running(spawned, grace=GREENLET_GRACE)
    leaked_connections = isolation.open_connections() - connections
    isolation.reset_globals()
    assert leaked_connections <= 0, f"the test left {leaked_connections} stream(s) open: close each response"
    assert leaked_greenlets == 0, f"the test left {leaked_greenlets} greenlet(s) running: stop or join them"


@pytest.fixture
def app() -> Flask:
    """A user's app with flask-impulse at ``/rt`` and the push secret set (tests/support/apps.py)."""
    app, _ = make_app()
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def open_page() -> Iterator[Callable[..., Page]]:
    """``open_page(url, name=...)``: a page in a new headless Chromium (selenium is imported here,
    for the browser tests alone)."""
    from tests.support.browser import open_pages

    with open_pages() as open_:
        yield open_


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start from no logs: the check at the end reads exactly this run's."""
    for log in LOG_DIR.glob("*.log"):
        log.unlink()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The last check of every run: no secret or token the suite used is in any server log.

    It runs after every fixture is torn down, so every server has stopped and flushed.
    """
    found = leaks(sorted(LOG_DIR.glob("*.log")), secret_values())
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("SECRETS FOUND IN SERVER LOGS (tests/.logs):", red=True, bold=True)
            for line in found:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@dataclass
class Service:
    """A running broker, and where its endpoint is mounted."""

    server: LiveServer
    base: str  # BASE of docs/protocol.md: the stream and push endpoint
    secret: str

    def push(self, body: object, secret: str | None = None, **kwargs: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {secret or self.secret}"}
        return requests.post(self.base, json=body, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]

    def health(self) -> dict[str, object]:
        return requests.get(self.server.health_url, timeout=5).json()  # type: ignore[no-any-return]


@contextmanager
def serve(app_spec: str, name: str, prefix: str = "", *, secret: str = SECRET, **env: str) -> Iterator[Service]:
    """``app_spec`` under gunicorn with ``env`` added to its environment, its endpoint at
    ``prefix``, pushed to with ``secret``: what a module's own server fixture starts."""
    with LiveServer(app_spec, env=env, health_path=f"{prefix}/health", name=name) as server:
        yield Service(server, server.url + (prefix or "/"), secret)


@pytest.fixture(scope="session")
def standalone() -> Iterator[Service]:
    """The standalone service, as `gunicorn wsgi:app` serves it."""
    with serve("wsgi:app", "standalone", REALTIME_SECRET=SECRET) as service:
        yield service


@pytest.fixture(scope="session")
def embedded() -> Iterator[Service]:
    """flask-impulse inside a user's app, under url_prefix="/realtime"."""
    with serve("tests.apps.embedded:app", "embedded", "/realtime", secret="embedded-secret") as service:
        yield service


@pytest.fixture(params=["standalone", "embedded"])
def service(request: pytest.FixtureRequest) -> Service:
    """Each test that takes it runs against both mountings."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port, shared by one test module."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
