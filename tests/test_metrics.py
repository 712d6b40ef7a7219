"""Prometheus metrics at IMPULSE_METRICS_PATH: off by default, counted per message, totalled over workers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from flask_impulse import Impulse, metrics
from flask_impulse.broker import Broker
from flask_impulse.metrics import Recorder
from tests.conftest import SECRET, Service, serve
from tests.support.processes import streams_on_every_worker
from tests.support.server import LiveServer
from tests.support.streams import SSEStream, unique

pytestmark = pytest.mark.live


def scrape(service: Service) -> dict[str, float]:
    answer = requests.get(service.server.url + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in answer.text.splitlines():
        match = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)", line)
        if match:
            samples[match[1]] = float(match[2])
    return samples


@pytest.fixture(scope="module")
def with_metrics() -> Iterator[Service]:
    with serve("wsgi:app", "metrics", REALTIME_SECRET=SECRET, IMPULSE_METRICS_PATH="/metrics") as service:
        yield service


def test_metrics_are_off_by_default(standalone: Service) -> None:
    answer = requests.get(standalone.server.url + "/metrics", timeout=10)
    assert answer.status_code == 404
    assert answer.json() == {"error": "Not found"}


def test_pushes_deliveries_connections_and_write_delays_are_counted(with_metrics: Service) -> None:
    channel = unique("metrics")
    before = scrape(with_metrics)
    streams = [SSEStream(with_metrics.base, {"channel": channel}) for _ in range(3)]
    try:
        for stream in streams:
            stream.assert_silent(0.1)
        assert scrape(with_metrics)["impulse_connections"] == before["impulse_connections"] + 3
        assert with_metrics.push({"channel": channel, "payload": 1}).json()["sent"] == 3
        batch = [{"channel": channel, "payload": n} for n in range(3)]
        assert with_metrics.push(batch).json()["sent"] == 9
        for stream in streams:
            assert [message["payload"] for message in stream.messages(4)] == [1, 0, 1, 2]
        after = scrape(with_metrics)
    finally:
        for stream in streams:
            stream.close()
    assert after["impulse_pushes_total"] - before["impulse_pushes_total"] == 4
    assert after["impulse_deliveries_total"] - before["impulse_deliveries_total"] == 12
    assert after["impulse_write_delay_seconds_count"] > before["impulse_write_delay_seconds_count"]
    assert after["impulse_slow_consumer_drops_total"] == before["impulse_slow_consumer_drops_total"]
    for _ in range(100):  # the hang-up watcher notices each close; bounded wait
        if scrape(with_metrics)["impulse_connections"] == before["impulse_connections"]:
            break
        SSEStream(with_metrics.base, {"channel": unique("metrics")}).close()
    assert scrape(with_metrics)["impulse_connections"] == before["impulse_connections"]


def test_two_workers_report_totals(tmp_path: Path) -> None:
    env = {"REALTIME_SECRET": SECRET, "IMPULSE_METRICS_PATH": "/metrics", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with LiveServer("wsgi:app", env=env, workers=2, name="metrics-2w") as server:
        service = Service(server, server.url + "/", SECRET)
        channel = unique("metrics")
        with streams_on_every_worker(server, service.base, channel, batch=20) as groups:
            opened = sum(len(group.socks) for group in groups)
            # Without Redis a push reaches the streams of the worker that took it: the
            # answers' "sent" add up to the deliveries of both workers.
            sent = 0
            for index in range(10):
                answer = requests.post(
                    service.base,
                    json={"channel": channel, "payload": index},
                    headers={"Authorization": f"Bearer {SECRET}", "Connection": "close"},
                    timeout=10,
                )
                sent += answer.json()["sent"]
            scrapes = [scrape(service) for _ in range(10)]
    for samples in scrapes:
        assert samples["impulse_connections"] == opened
        assert samples["impulse_pushes_total"] == 10
        assert samples["impulse_deliveries_total"] == sent


def test_metrics_need_the_health_token_when_one_is_set() -> None:
    env = {"REALTIME_SECRET": SECRET, "IMPULSE_METRICS_PATH": "/metrics", "IMPULSE_HEALTH_TOKEN": "probe-token"}
    with LiveServer("wsgi:app", env=env, name="metrics-token") as server:
        refused = requests.get(server.url + "/metrics", timeout=10)
        assert refused.status_code == 401
        assert refused.json()["error"] == "Health check token required"
        allowed = requests.get(server.url + "/metrics", headers={"Authorization": "Bearer probe-token"}, timeout=10)
        assert allowed.status_code == 200
        assert "impulse_pushes_total" in allowed.text


class CountingRecorder(Recorder):
    """Counts streams as the Prometheus gauge would, without a registry."""

    enabled = True

    def __init__(self) -> None:
        self.connections = 0

    def opened(self) -> None:
        self.connections += 1

    def closed(self) -> None:
        self.connections -= 1

    def watch(self, broker: Broker) -> None:
        pass


def test_streams_opened_before_metrics_were_on_do_not_take_the_gauge_below_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "recorder", Recorder())
    app = Flask(__name__)
    Impulse(app)
    broker = app.extensions["impulse"].broker
    early = broker.open(("c",), None, None)
    counting = CountingRecorder()
    monkeypatch.setattr(metrics, "recorder", counting)
    late = broker.open(("c",), None, None)
    assert counting.connections == 1
    broker.release(early)
    assert counting.connections == 1
    broker.release(late)
    broker.release(late)
    assert counting.connections == 0
