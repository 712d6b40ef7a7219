"""gunicorn settings and hooks for serving SSE: ``gunicorn -c python:flask_impulse.gunicorn_config wsgi:app``.

What they fix in gunicorn's defaults, for long-lived streams:

- gevent workers, with ``worker_connections`` raised from 1,000 (which silently caps streams);
- access logs that never show the ``token`` query parameter;
- on a worker's exit (SIGTERM, SIGINT, SIGQUIT, a restart by SIGHUP or ``max_requests``),
  every stream is ended within ``IMPULSE_DRAIN_WINDOW`` seconds with a ``retry:`` hint,
  instead of being held until ``graceful_timeout`` or cut all at once.
"""

from __future__ import annotations

import functools
import re
import signal
from typing import Any

import gevent
from gunicorn.glogging import Logger

from .broker import live_brokers

worker_class = "gevent"
worker_connections = 20_100
# gevent workers notify the arbiter from their own loop, so streams never trip this.
timeout = 30
graceful_timeout = 5
keepalive = 75
control_socket_disable = True
# Room for a token of IMPULSE_MAX_TOKEN_LENGTH in the query, so that the app, not gunicorn,
# judges it and answers JSON. 8190 is gunicorn's ceiling.
limit_request_line = 8190

_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&])(?:token|access_token|jwt)=)[^&\s]*")


def redact(text: str) -> str:
    """``text`` with the values of token-bearing query parameters replaced."""
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with tokens taken out of the request line and query string."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for name in ("r", "q"):
            if isinstance(atoms.get(name), str):
                atoms[name] = redact(atoms[name])
        return atoms


logger_class = RedactingLogger


def post_worker_init(worker: Any) -> None:
    # gunicorn's workers leave 0.1 s after SIGINT or SIGQUIT (the arbiter turns its own
    # SIGINT into SIGQUIT for them), which would cut every stream at once: drain instead,
    # exactly as on SIGTERM. The arbiter still kills a worker after graceful_timeout.
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, functools.partial(_leave_gracefully, worker))
        signal.siginterrupt(signum, False)
    gevent.spawn(_drain_on_exit, worker)


def _leave_gracefully(worker: Any, signum: int, frame: Any) -> None:
    worker.alive = False
    worker.cfg.worker_int(worker)


def _drain_on_exit(worker: Any) -> None:
    # gunicorn marks a leaving worker with alive = False (on a signal, at max_requests, on a
    # reload) and then waits for open requests; streams never finish by themselves, so end
    # them here. Connections whose stream ends are closed rather than kept alive, so that the
    # worker empties and the client's reconnect reaches a live worker.
    while worker.alive:
        gevent.sleep(0.1)
    for request in list(_open_requests):
        request.must_close = True
    for broker in live_brokers():
        broker.drain()


# The requests in progress in this worker, for _drain_on_exit.
_open_requests: set[Any] = set()


def pre_request(worker: Any, req: Any) -> None:
    _open_requests.add(req)
    worker.log.debug("%s %s", req.method, req.path)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    _open_requests.discard(req)
