"""What one in-process test may leave behind: nothing.

The package keeps a few process-wide globals (the metrics recorder, the direct-writes switch
and its flush list, the registry of live brokers). :func:`reset_globals` puts them back as a
fresh process has them; it is the one place that names them, and names them directly, so
that a rename inside the package fails here at once instead of leaving state behind
unnoticed. :func:`open_connections` and :func:`spawned_greenlets` find what a test could
leak, cheaply enough to run around every test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent

from flask_impulse import broker, metrics
from flask_impulse.broker import connection, transport


def reset_globals() -> None:
    metrics.recorder = metrics.Recorder()  # metrics off, as before any app turned them on
    metrics.totals = metrics.Totals()
    transport.allow_direct_writes(False)
    connection._to_flush.clear()
    broker._live_brokers.clear()


def open_connections() -> int:
    """Streams registered with any broker alive in this process."""
    return sum(len(each.connections) for each in broker.live_brokers())


@contextmanager
def spawned_greenlets() -> Iterator[list[gevent.Greenlet]]:
    """Every greenlet started with ``gevent.spawn`` or ``gevent.spawn_later`` inside the block
    (the package starts its greenlets so): a list of them, cheaper than walking the heap."""
    spawned: list[gevent.Greenlet] = []
    spawn, spawn_later = gevent.spawn, gevent.spawn_later

    def recorded_spawn(*args: Any, **kwargs: Any) -> gevent.Greenlet:
        greenlet = spawn(*args, **kwargs)
        spawned.append(greenlet)
        return greenlet

    def recorded_spawn_later(seconds: float, *args: Any, **kwargs: Any) -> gevent.Greenlet:
        greenlet = spawn_later(seconds, *args, **kwargs)
        spawned.append(greenlet)
        return greenlet

    gevent.spawn, gevent.spawn_later = recorded_spawn, recorded_spawn_later
    try:
        yield spawned
    finally:
        gevent.spawn, gevent.spawn_later = spawn, spawn_later


def still_running(greenlets: list[gevent.Greenlet], grace: float) -> int:
    """How many of ``greenlets`` outlive ``grace`` seconds (a timer that ends by itself is no
    leak); those are killed, so that they cannot act in the next test."""
    running = [greenlet for greenlet in greenlets if not greenlet.dead]
    if not running:
        return 0
    gevent.joinall(running, timeout=grace)
    leaked = [greenlet for greenlet in running if not greenlet.dead]
    gevent.killall(leaked, timeout=grace)
    return len(leaked)
