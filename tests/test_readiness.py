"""The readiness check (``<health path>/ready``): 200 only when a push comes back through a
real connection; 503 JSON when the broker cannot deliver, is full, or is draining."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from flask_impulse.broker import Draft, MemoryBackplane, Published
from flask_impulse.readiness import READY_CHANNEL
from tests.conftest import SECRET
from tests.support.apps import make_app, with_backplane
from tests.support.server import LiveServer
from tests.support.streams import SSEStream


class SilentBackplane(MemoryBackplane):
    """Accepts every push and delivers none, like a backplane whose subscriber link is lost."""

    def publish(self, draft: Draft) -> Published:
        message_id = super().publish(draft).id
        return Published(message_id, 0)

    def start(self, deliver: object) -> None:
        super().start(lambda message: 0)


def test_ready_when_a_push_comes_back_through_a_real_connection(app: Flask, client: FlaskClient) -> None:
    response = client.get("/rt/health/ready")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "connections": 0}
    broker = app.extensions["impulse"].broker
    assert broker.connections == set()  # the probe's connection is released


def test_not_ready_when_the_broker_does_not_deliver() -> None:
    response = make_app(with_backplane(SilentBackplane))[0].test_client().get("/rt/health/ready")
    assert response.status_code == 503
    assert response.json == {"error": "Not ready", "details": "a push to the broker did not come back within 2 s"}
    assert response.headers["Retry-After"] == "1"


def test_not_ready_at_the_connection_limit_or_while_draining() -> None:
    app, _ = make_app(IMPULSE_MAX_CONNECTIONS=1)
    broker = app.extensions["impulse"].broker
    client = app.test_client()
    held = broker.open(("c",), None, None)
    full = client.get("/rt/health/ready")
    assert full.status_code == 503
    assert "IMPULSE_MAX_CONNECTIONS" in full.json["details"]
    broker.release(held)
    assert client.get("/rt/health/ready").status_code == 200
    broker.drain().join(5)
    draining = client.get("/rt/health/ready")
    assert draining.status_code == 503
    assert draining.json == {"error": "Not ready", "details": "the service is shutting down"}


def test_ready_path_follows_the_health_path_or_its_own_setting() -> None:
    assert make_app(IMPULSE_HEALTH_PATH="/status")[0].test_client().get("/rt/status/ready").status_code == 200
    client = make_app(IMPULSE_READY_PATH="readyz")[0].test_client()
    assert client.get("/rt/readyz").status_code == 200
    assert client.get("/rt/health/ready").status_code == 404
    with pytest.raises(ValueError, match="IMPULSE_READY_PATH"):
        make_app(IMPULSE_READY_PATH="/health")


def test_ready_probe_channel_is_out_of_reach_of_clients() -> None:
    client = make_app(IMPULSE_SECRET="s")[0].test_client()
    assert client.get("/rt", query_string={"channel": READY_CHANNEL}).status_code == 400
    pushed = client.post("/rt", json={"channel": READY_CHANNEL, "payload": 1}, headers={"Authorization": "Bearer s"})
    assert pushed.status_code == 400


@pytest.fixture(scope="module")
def guarded() -> Iterator[LiveServer]:
    env = {"REALTIME_SECRET": SECRET, "HEALTH_CHECK_TOKEN": "hc"}
    with LiveServer("wsgi:app", env=env, health_path="/health?token=hc", name="ready") as server:
        yield server


@pytest.mark.live
def test_live_readiness_needs_the_health_token_and_leaves_health_cheap(guarded: LiveServer) -> None:
    ready = guarded.url + "/health/ready"
    assert requests.get(ready, timeout=5).status_code == 401
    with SSEStream(guarded.url + "/", {"channel": "busy"}):
        answer = requests.get(ready, headers={"Authorization": "Bearer hc"}, timeout=5)
        assert answer.status_code == 200
        assert answer.json() == {"status": "ready", "connections": 1}
        health = requests.get(guarded.url + "/health", params={"token": "hc"}, timeout=5).json()
        assert health["connections"] == 1  # the probe's connection is gone again
    assert requests.post(ready, timeout=5).status_code == 405
