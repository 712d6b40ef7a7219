from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.support.browser import open_page  # noqa: F401 - a fixture, for every test module
from tests.support.redis import RedisServer
from tests.support.secrets import PUSH_SECRET, leaks, secret_values
from tests.support.server import LOG_DIR, LiveServer

SECRET = PUSH_SECRET


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


@pytest.fixture(scope="session")
def standalone() -> Iterator[Service]:
    """The standalone service, as `gunicorn wsgi:app` serves it."""
    with LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="standalone") as server:
        yield Service(server, server.url + "/", SECRET)


@pytest.fixture(scope="session")
def embedded() -> Iterator[Service]:
    """flask-impulse inside a user's app, under url_prefix="/realtime"."""
    with LiveServer("tests.apps.embedded:app", health_path="/realtime/health", name="embedded") as server:
        yield Service(server, server.url + "/realtime", "embedded-secret")


@pytest.fixture(params=["standalone", "embedded"])
def service(request: pytest.FixtureRequest) -> Service:
    """Each test that takes it runs against both mountings."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port, shared by one test module."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server
