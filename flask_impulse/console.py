"""The operator console: a page of live figures at ``BASE/console``, with a form that
subscribes and one that pushes, and the JSON snapshot it reads, ``BASE/console/snapshot``,
which scripts may read too (docs/console.md).

Off unless ``IMPULSE_CONSOLE_TOKEN`` is set: every console path then answers the 404 of an
unknown path, headers included, so that a scan cannot tell it is there. On, each asks for
the token: ``Authorization: Bearer`` or ``?token=`` (scripts), or the session cookie the page
gets when it is opened once as ``BASE/console?token=...``, which then redirects to a URL
without the token (docs/console.md says why a cookie, and why a short one).

The figures are the instance's, over every gunicorn worker, through the directory that
``/health`` counts streams in (``instance.py``): each worker writes its totals and channel
counts there once a second, from a libev timer (no greenlet, no thread), and keeps a bounded
ring of the instance's totals at one sample a second, from which the page draws its rates.
"""

from __future__ import annotations

import hmac
import html
import logging
import os
import time
import weakref
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory

from . import handlers, metrics
from .errors import Refusal
from .state import EXTENSION_KEY, ImpulseState

if TYPE_CHECKING:
    from .broker import Broker
    from .presence import Presence

log = logging.getLogger(__name__)

#: Seconds between two samples of the totals, and how many samples the ring keeps (5 min).
SAMPLE_INTERVAL = 1.0
SAMPLES = 300
#: Channels the snapshot lists (the most subscribed), and each worker writes for the others:
#: the instance's top list is summed from each worker's top ones, so it is exact for a
#: channel in every worker's top 50, and a lower bound otherwise.
TOP_CHANNELS = 10
WORKER_CHANNELS = 50
#: The session cookie: its value is an HMAC of its expiry under the token, never the token.
COOKIE = "impulse_console"
SESSION_SECONDS = 3600
#: Every console answer's headers: a page whose every script and style is a file of ours.
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC_DIR = Path(__file__).parent / "static"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
_ALL_METHODS = ["GET", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True, slots=True)
class Sample:
    """Running totals at one moment (epoch seconds)."""

    time: float
    pushes: int
    deliveries: int
    drops: int


class RateRing:
    """The last ``size`` per-second rates, from samples of running totals.

    Bounded by a deque of ``size + 1`` samples. A total that falls (a worker exited and took
    its counts with it) gives a rate of 0 for that interval, never a negative one.
    """

    def __init__(self, size: int = SAMPLES) -> None:
        self._samples: deque[Sample] = deque(maxlen=size + 1)

    def add(self, sample: Sample) -> None:
        self._samples.append(sample)

    def rates(self) -> list[dict[str, float]]:
        """Oldest first: the end of each interval, and pushes, deliveries and drops per second."""
        rates = []
        for before, after in pairwise(self._samples):
            elapsed = after.time - before.time
            if elapsed <= 0:
                continue
            rates.append(
                {
                    "time": round(after.time, 3),
                    "pushes": round(max(after.pushes - before.pushes, 0) / elapsed, 3),
                    "deliveries": round(max(after.deliveries - before.deliveries, 0) / elapsed, 3),
                    "drops": round(max(after.drops - before.drops, 0) / elapsed, 3),
                }
            )
        return rates


def sum_figures(own: dict[str, Any], others: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The instance's totals, channel counts and drain state, from every worker's figures."""
    totals = Counter(own["totals"])
    channels = Counter(own["channels"])
    draining = own["draining"]
    workers = 1
    for figures in others:
        totals.update(figures.get("totals", {}))
        channels.update(figures.get("channels", {}))
        draining = draining or bool(figures.get("draining"))
        workers += 1
    return {"totals": dict(totals), "channels": channels, "draining": draining, "workers": workers}


class Console:
    """One app's console in one process: the token, and the figures it shows."""

    def __init__(self, token: str, broker: Broker, presence: Presence) -> None:
        self.token = token
        self.broker = broker
        self.presence = presence
        self.ring = RateRing()
        self._timer: Any = None

    def start(self) -> None:
        """Sample once a second from the event loop; the timer holds the console weakly and
        never keeps a process alive."""
        self.tick()
        timer = gevent.get_hub().loop.timer(SAMPLE_INTERVAL, SAMPLE_INTERVAL)
        timer.ref = False
        console = weakref.ref(self)

        def tick() -> None:
            alive = console()
            if alive is None:
                timer.stop()
            else:
                alive.tick()

        timer.start(tick)
        self._timer = timer  # held: the watcher lives as long as its console

    def tick(self) -> None:
        """Publish this worker's figures for the others; sample the instance's totals."""
        try:
            own = self.own_figures()
            self.broker.stream_count.publish_figures(own)
            instance = sum_figures(own, self.broker.stream_count.other_figures())
            totals = instance["totals"]
            self.ring.add(Sample(time.time(), totals["pushes"], totals["deliveries"], totals["drops"]))
        except Exception:  # a timer callback's error would be printed by the hub on every tick
            log.exception("The console could not sample its figures")

    def own_figures(self) -> dict[str, Any]:
        counts = Counter(
            {name: count for name, count in self.broker.channel_counts().items() if not name.startswith("\x00")}
        )
        totals = metrics.totals
        return {
            "pid": os.getpid(),
            "totals": {"pushes": totals.pushes, "deliveries": totals.deliveries, "drops": totals.drops},
            "channels": dict(counts.most_common(WORKER_CHANNELS)),
            "draining": self.broker.draining,
        }

    def snapshot(self) -> dict[str, Any]:
        """What ``GET BASE/console/snapshot`` answers (docs/console.md lists every field)."""
        broker = self.broker
        instance = sum_figures(self.own_figures(), broker.stream_count.other_figures())
        return {
            "time": round(time.time(), 3),
            "uptime": round(time.time() - broker.started, 3),
            "worker": {"pid": os.getpid(), "connections": len(broker.connections), "draining": broker.draining},
            "instance": {
                "workers": instance["workers"],
                "connections": broker.instance_connections(),
                "draining": instance["draining"],
            },
            "totals": instance["totals"],
            "rates": {"interval": SAMPLE_INTERVAL, "samples": self.ring.rates()},
            "channels": self._top_channels(instance["channels"]),
            "backplane": self._backplane(),
            "presence": {"patterns": list(self.presence.patterns)} if self.presence.enabled else None,
        }

    def _top_channels(self, counts: Counter[str]) -> list[dict[str, Any]]:
        top = []
        for name, connections in counts.most_common(TOP_CHANNELS):
            row: dict[str, Any] = {"channel": name, "connections": connections}
            if self.presence.enabled and self.presence.covers(name):
                try:
                    row["members"] = self.presence.snapshot(name)["memberCount"]
                except Refusal:  # Redis not answering: the backplane's row says so
                    row["members"] = None
            top.append(row)
        return top

    def _backplane(self) -> dict[str, Any]:
        from .broker import MemoryBackplane
        from .broker.redis import RedisBackplane  # imports redis-py only when one is built

        backplane = self.broker.backplane
        if isinstance(backplane, MemoryBackplane):
            return {"kind": "memory", "status": "ok"}
        if not isinstance(backplane, RedisBackplane):  # an app's own: nothing to ask it
            return {"kind": type(backplane).__name__, "status": "unknown"}
        import redis

        started = time.perf_counter()
        try:
            backplane.client().ping()
        except (redis.RedisError, OSError) as exc:
            return {"kind": "redis", "status": "unreachable", "details": type(exc).__name__}
        return {"kind": "redis", "status": "ok", "latencyMs": round((time.perf_counter() - started) * 1000, 2)}


# -- the routes ---------------------------------------------------------------------------
def create_blueprint() -> Blueprint:
    """The console's routes, nested in the impulse blueprint (``Impulse`` registers it), so
    that they sit under the same prefix and share its error handler and CORS."""
    blueprint = Blueprint("console", __name__)
    blueprint.add_url_rule("/console", "page", page, methods=_ALL_METHODS)
    blueprint.add_url_rule("/console/snapshot", "snapshot", snapshot, methods=_ALL_METHODS)
    blueprint.add_url_rule("/console/push", "push", push, methods=_ALL_METHODS)
    blueprint.add_url_rule("/console/<name>", "asset", asset, methods=_ALL_METHODS)
    blueprint.after_request(_add_console_headers)
    return blueprint


def _state() -> ImpulseState:
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def _console(*methods: str) -> Console:
    """This app's console, or the 404 of an unknown path when it is off."""
    console = _state().console
    if console is None:
        raise Refusal("Not found", status=404)
    if request.method not in (*methods, "HEAD" if "GET" in methods else ""):
        raise Refusal("Method not allowed", status=405)
    return console


def _authorize(console: Console) -> str:
    """How the request proves it holds the token: ``"bearer"``, ``"query"`` or ``"cookie"``."""
    presented, how = request.args.get("token") or "", "query"
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if not presented and scheme.lower() == "bearer" and credentials.strip():
        presented, how = credentials.strip(), "bearer"
    if presented:
        if not hmac.compare_digest(presented.encode(), console.token.encode()):
            raise Refusal("Invalid token", status=403)
        return how
    session = request.cookies.get(COOKIE)
    if session and _valid_session(console.token, session):
        return "cookie"
    raise Refusal(
        "Console token required",
        "open BASE/console?token=... once, or send Authorization: Bearer (IMPULSE_CONSOLE_TOKEN)",
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="impulse-console"'},
    )


def _session_value(token: str, expires: int) -> str:
    mac = hmac.new(token.encode(), f"impulse-console-session:{expires}".encode(), "sha256").hexdigest()
    return f"{expires}.{mac}"


def _valid_session(token: str, value: str) -> bool:
    expires, _, _ = value.partition(".")
    if not (expires.isascii() and expires.isdigit()) or int(expires) < time.time():
        return False
    return hmac.compare_digest(value.encode(), _session_value(token, int(expires)).encode())


def _with_session(response: Response, console: Console, path: str) -> Response:
    expires = int(time.time()) + SESSION_SECONDS
    response.set_cookie(
        COOKIE,
        _session_value(console.token, expires),
        max_age=SESSION_SECONDS,
        path=path,
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


def page() -> Response:
    console = _console("GET")
    how = _authorize(console)
    path = request.script_root + request.path
    if how == "query":
        # Once: the token leaves the address bar, the history and any later log line.
        return _with_session(Response(status=303, headers={"Location": path}), console, path)
    response = Response(_render_page(path), content_type="text/html; charset=utf-8")
    return _with_session(response, console, path) if how == "bearer" else response


def snapshot() -> Response:
    console = _console("GET")
    _authorize(console)
    return jsonify(console.snapshot())


def push() -> Response:
    """A test push from the page: the push endpoint's own path, body, checks and answer,
    authorized by the console token so that the push secret never reaches a browser."""
    console = _console("POST")
    if _authorize(console) == "cookie" and request.mimetype != "application/json":
        # SameSite=Strict keeps the cookie off cross-site requests; a cross-site form cannot
        # send this type without a preflight either.
        raise Refusal("Forbidden", "the console's push form sends application/json", status=403)
    return jsonify(handlers.publish(_state(), request._get_current_object(), "console"))  # type: ignore[attr-defined]


def asset(name: str) -> Response:
    console = _console("GET")
    if name not in ASSETS:
        raise Refusal("Not found", status=404)
    _authorize(console)
    return send_from_directory(STATIC_DIR, name, mimetype=ASSETS[name], max_age=0)


def _add_console_headers(response: Response) -> Response:
    if _state().console is not None:  # off, a console path answers as any unknown path
        response.headers.update(CONSOLE_HEADERS)
    return response


def _render_page(path: str) -> str:
    base = path[: -len("console")]
    return PAGE.format(
        base=html.escape(base),
        console=html.escape(path),
        jwt="1" if _state().gatekeeper.jwt_mode else "0",
    )


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flask-impulse console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{console}/console.css">
<script src="{console}/console.js" defer></script>
</head>
<body data-base="{base}" data-console="{console}" data-jwt="{jwt}">
<header>
  <h1>flask-impulse console</h1>
  <span id="status" class="status">connecting</span>
</header>
<main>
  <section class="figures" aria-label="Live figures">
    <div class="figure"><span class="label">Connections</span><span id="connections" class="value">-</span>
      <span id="connections-note" class="note"></span></div>
    <div class="figure"><span class="label">Pushes / s (last 10 s)</span><span id="push-rate" class="value">-</span>
      <span id="push-total" class="note"></span></div>
    <div class="figure"><span class="label">Deliveries / s (last 10 s)</span>
      <span id="delivery-rate" class="value">-</span>
      <span id="delivery-total" class="note"></span></div>
    <div class="figure"><span class="label">Slow-consumer drops</span><span id="drops" class="value">-</span>
      <span id="drops-note" class="note"></span></div>
    <div class="figure"><span class="label">Backplane</span><span id="backplane" class="value">-</span>
      <span id="backplane-note" class="note"></span></div>
    <div class="figure"><span class="label">Drain</span><span id="drain" class="value">-</span>
      <span id="uptime" class="note"></span></div>
  </section>
  <section>
    <h2>Pushes and deliveries per second</h2>
    <canvas id="chart" width="960" height="260" role="img"
      aria-label="Pushes and deliveries per second over the last minutes"></canvas>
  </section>
  <div class="columns">
  <section>
    <h2>Channels with the most subscribers</h2>
    <table id="channels">
      <thead><tr><th>Channel</th><th>Connections</th><th id="members-heading">Members</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="presence" class="note"></p>
  </section>
  <section>
    <h2>Subscribe</h2>
    <form id="subscribe-form">
      <label>Channel <input id="subscribe-channel" name="channel" required maxlength="256"></label>
      <label>Subscriber token <input id="subscribe-token" name="token" autocomplete="off"></label>
      <label class="inline"><input id="subscribe-presence" type="checkbox" name="presence"> presence events</label>
      <div class="buttons">
        <button id="subscribe-button" type="submit">Subscribe</button>
        <button id="unsubscribe-button" type="button" disabled>Close</button>
      </div>
    </form>
    <p id="subscribe-state" class="note">Not subscribed.</p>
    <ol id="received" class="log"></ol>
  </section>
  <section>
    <h2>Push a test message</h2>
    <form id="push-form">
      <label>Channel <input id="push-channel" name="channel" required maxlength="256"></label>
      <label>Payload (JSON) <textarea id="push-payload" name="payload" rows="3">{{"text": "hello"}}</textarea></label>
      <label>Idempotency key <input id="push-key" name="idempotencyKey" autocomplete="off"></label>
      <button id="push-button" type="submit">Push</button>
    </form>
    <pre id="push-answer" class="answer"></pre>
  </section>
  </div>
</main>
</body>
</html>
"""
