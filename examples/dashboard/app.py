"""A live dashboard: a background greenlet pushes figures every second, every open page
updates at once. The page uses flask-impulse's browser client (``/realtime/client.js``).

Run it with one command, then open http://127.0.0.1:5001/::

    python examples/dashboard/app.py [--host 127.0.0.1] [--port 5001] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import TypedDict

import gevent
from flask import Flask, render_template

from flask_impulse import Channel, Impulse


class Metrics(TypedDict):
    """One tick of the dashboard."""

    time: str
    tick: int
    ordersPerMinute: int
    revenue: float
    loadAverage: list[float]
    subscribers: int


#: The dashboard's one channel, typed: mypy checks every push, the server validates it at run
#: time (msgspec, when installed, is faster), `flask impulse typescript` emits it for the front end.
metrics = Channel("dashboard:metrics", Metrics)

#: Points on the chart: the latest sample and the 60 intervals before it (a minute at 1 s).
CHART_SAMPLES = 61

app = Flask(__name__)
app.config["DASHBOARD_INTERVAL"] = float(os.environ.get("DASHBOARD_INTERVAL", "1.0"))
impulse = Impulse(app, channels=[metrics])
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")
_publisher: gevent.Greenlet | None = None
#: The latest orders-per-minute figures of this worker, oldest first, so that a page opens on a
#: full chart instead of an empty one that fills in a minute.
_recent: deque[int] = deque(maxlen=CHART_SAMPLES)


@app.get("/")
def index() -> str:
    interval = app.config["DASHBOARD_INTERVAL"]
    return render_template(
        "index.html", channel=metrics.name, recent=list(_recent), interval=interval, samples=CHART_SAMPLES
    )


@app.before_request
def start_publisher() -> None:
    """Start the pushing greenlet with the first request the worker serves (the readiness
    probe, or a page): at import time the worker's gevent hub is not running yet."""
    global _publisher
    if _publisher is None:
        interval = app.config["DASHBOARD_INTERVAL"]
        # The window before the publisher started, from the same model: the first page opens on a
        # full chart.
        _recent.extend(orders_per_minute(-step * interval) for step in range(CHART_SAMPLES, 0, -1))
        _publisher = gevent.spawn(publish_forever, interval)


def orders_per_minute(elapsed: float) -> int:
    """The made-up figure at ``elapsed`` seconds: a slow wave with noise."""
    return max(0, round(120 + 40 * math.sin(elapsed / 20) + random.gauss(0, 8)))


def publish_forever(interval: float) -> None:
    """Push one :class:`Metrics` per interval. ``impulse.push`` never blocks on a slow page."""
    started = time.monotonic()
    revenue = 0.0
    for tick in range(1, sys.maxsize):
        orders = orders_per_minute(time.monotonic() - started)
        _recent.append(orders)
        revenue += orders * interval / 60 * random.uniform(20, 60)
        with app.app_context():
            subscribers = len(impulse.state.broker.connections)
            impulse.push(
                metrics,
                {
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "tick": tick,
                    "ordersPerMinute": orders,
                    "revenue": round(revenue, 2),
                    "loadAverage": [round(value, 2) for value in os.getloadavg()],
                    "subscribers": subscribers,
                },
            )
        gevent.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    """Serve the app as flask-impulse apps are deployed: gunicorn with gevent workers."""
    parser = argparse.ArgumentParser(description="flask-impulse live dashboard example")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="default 127.0.0.1 (HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5001")), help="default 5001 (PORT)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pushes (default 1)")
    args = parser.parse_args(argv)
    os.environ["DASHBOARD_INTERVAL"] = str(args.interval)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:flask_impulse.gunicorn_config",
        "--chdir",
        str(Path(__file__).resolve().parent),
        "--bind",
        f"{args.host}:{args.port}",
        "app:app",
    ]
    print(f"Dashboard on http://{args.host}:{args.port}/", flush=True)
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
