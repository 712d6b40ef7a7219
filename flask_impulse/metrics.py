"""Prometheus metrics (``pip install flask-impulse[metrics]``), served at ``IMPULSE_METRICS_PATH``.

Counted where it is cheap: a push adds its deliveries in one step, not one per connection;
queue depths are sampled every few seconds rather than tracked per message; the write
delay is observed once per write, which carries one message or a whole burst.

Totals over gunicorn workers come from prometheus_client's multiprocess mode: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server starts, and every
worker writes its figures there for whichever worker answers the scrape (our gunicorn
config forgets a worker's live gauges when it exits). Without it, each worker reports its own.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import TYPE_CHECKING, Any

import gevent

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .broker import Broker

#: Seconds between two samples of the connections' queue depths.
QUEUE_SAMPLE_INTERVAL = 5.0
#: Buckets of the push→write delay, in seconds.
DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Totals:
    """Plain running counts of this process, kept whether Prometheus is on or not: the
    operator console draws its rates from them (``console.py``). One addition per push."""

    __slots__ = ("deliveries", "drops", "pushes")

    def __init__(self) -> None:
        self.pushes = 0
        self.deliveries = 0
        self.drops = 0


#: This process's totals, since it started.
totals = Totals()


class Recorder:
    """Keeps the plain :data:`totals` only: what runs while metrics are off."""

    enabled = False

    def opened(self) -> None:
        """A stream opened."""

    def closed(self) -> None:
        """A stream ended."""

    def published(self, count: int = 1) -> None:
        """``count`` pushes were accepted (each message of a batch counts)."""
        totals.pushes += count

    def delivered(self, count: int) -> None:
        """``count`` messages were queued or written to local streams."""
        totals.deliveries += count

    def dropped(self) -> None:
        """A slow consumer was closed."""
        totals.drops += 1

    def written(self, published_at: float) -> None:
        """A write went out whose oldest message was published at ``published_at`` (epoch seconds)."""

    def watch(self, broker: Broker) -> None:
        """Sample ``broker``'s queues from now on."""


class PrometheusRecorder(Recorder):
    """The process's metrics, registered once in prometheus_client's default registry."""

    enabled = True

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.connections = Gauge("impulse_connections", "Open SSE streams", multiprocess_mode="livesum")
        self.pushes = Counter("impulse_pushes", "Messages accepted for publication (a batch counts each message)")
        self.deliveries = Counter("impulse_deliveries", "Messages handed to local streams")
        self.drops = Counter("impulse_slow_consumer_drops", "Streams closed because their queue was full")
        self.queued = Gauge(
            "impulse_queued_messages", "Messages waiting in stream queues (sampled)", multiprocess_mode="livesum"
        )
        self.deepest = Gauge("impulse_queue_depth_max", "Longest stream queue (sampled)", multiprocess_mode="livemax")
        self.delay = Histogram(
            "impulse_write_delay_seconds",
            "Time from a message's publication to its write to a stream, once per write (its oldest message)",
            buckets=DELAY_BUCKETS,
        )
        self._watched: list[Any] = []

    def opened(self) -> None:
        self.connections.inc()

    def closed(self) -> None:
        self.connections.dec()

    def published(self, count: int = 1) -> None:
        totals.pushes += count
        self.pushes.inc(count)

    def delivered(self, count: int) -> None:
        if count:
            totals.deliveries += count
            self.deliveries.inc(count)

    def dropped(self) -> None:
        totals.drops += 1
        self.drops.inc()

    def written(self, published_at: float) -> None:
        self.delay.observe(max(time.time() - published_at, 0.0))

    def watch(self, broker: Broker) -> None:
        if not self._watched:
            gevent.spawn(self._sample_queues)
        self._watched.append(weakref.ref(broker))

    def _sample_queues(self) -> None:
        while True:
            total = deepest = 0
            for reference in list(self._watched):
                broker = reference()
                if broker is None:
                    self._watched.remove(reference)
                    continue
                for connection in list(broker.connections):
                    depth = connection.queued
                    total += depth
                    deepest = max(deepest, depth)
            self.queued.set(total)
            self.deepest.set(deepest)
            gevent.sleep(QUEUE_SAMPLE_INTERVAL)


#: The recorder every broker and connection in this process reports to.
recorder: Recorder = Recorder()


def enable() -> Recorder:
    """Switch this process's metrics on (once; later calls return the same recorder)."""
    global recorder
    if not recorder.enabled:
        try:
            recorder = PrometheusRecorder()
        except ImportError:
            raise ConfigurationError(
                "IMPULSE_METRICS_PATH is set, but prometheus_client is not installed: "
                "pip install flask-impulse[metrics]"
            ) from None
    return recorder


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, totalled over workers in multiprocess mode."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def forget_worker(pid: int) -> None:
    """A worker exited: drop its live gauges from the totals (gunicorn's ``child_exit``)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
