"""gunicorn settings and hooks for serving SSE:
``gunicorn -c python:flask_impulse.gunicorn_config flask_impulse.wsgi:app``.

What they fix in gunicorn's defaults, for long-lived streams:

- gevent workers, with ``worker_connections`` raised from 1,000 (which silently caps streams);
- access and error logs that never show a token or secret (query, ``Authorization``, cookies);
- request-size limits set explicitly, and answered in JSON by the worker (``server.worker``);
- on a worker's exit (SIGTERM, SIGINT, SIGQUIT, a restart by SIGHUP or ``max_requests``),
  every stream is ended within ``IMPULSE_DRAIN_WINDOW`` seconds with a ``retry:`` hint,
  instead of being held until ``graceful_timeout`` or cut all at once;
- ``/health`` counts the streams of every worker of the instance (``instance``);
- the garbage collector's youngest generation collected every 7,000 allocations, not 700.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
from typing import Any

import gevent
from gunicorn.glogging import Logger, SafeAtoms

from . import instance
from .broker import live_brokers
from .broker.transport import allow_direct_writes
from .metrics import forget_worker
from .security.redaction import REDACTED, SECRET_ATOMS, RedactingFilter, install, redact
from .server.logformat import JsonFormatter, use_json_for_app_logs

# Every log record of the arbiter and its workers, whatever logger makes it, is redacted.
install()

# gevent records, for every greenlet, the stack and greenlet that spawned it (a debugging
# aid). With a greenlet per stream that is several hundred bytes each, and slower spawns.
gevent.config.track_greenlet_tree = False

# gunicorn's gevent worker, answering malformed and oversized requests in JSON.
worker_class = "flask_impulse.server.worker.ImpulseGeventWorker"
worker_connections = 20_100
# gevent workers notify the arbiter from their own loop, so streams never trip this.
timeout = 30
# How long a leaving worker waits for its open requests. Above the drain window (streams end
# within IMPULSE_DRAIN_WINDOW, 2 s) and above the idle timeout of a proxy's upstream keep-alive
# connections (deploy/nginx.conf: 3 s): the proxy closes an idle connection before the worker
# gives up on it, so the worker never closes one a request may be arriving on.
graceful_timeout = 5
keepalive = 75
control_socket_disable = True
# Request-size limits: gunicorn's defaults, but for the request line, raised to gunicorn's
# ceiling so that a token of IMPULSE_MAX_TOKEN_LENGTH fits and the app's own
# IMPULSE_MAX_QUERY_LENGTH answers first, in JSON.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190


class RedactedAtoms(SafeAtoms):  # type: ignore[misc]
    """Access-log atoms, redacted as the log format reads them: credentials whole, tokens in
    query strings, referers and raw URIs by value."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if key.lower() in SECRET_ATOMS and value not in ("-", ""):
            return REDACTED
        return redact(value) if isinstance(value, str) else value


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with tokens and secrets taken out of every access and error line."""

    atoms_wrapper_class = RedactedAtoms

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if not any(isinstance(existing, RedactingFilter) for existing in self.error_log.filters):
            self.error_log.addFilter(RedactingFilter())


class JsonLogger(RedactingLogger):
    """:class:`RedactingLogger` writing one JSON object per line (``--log-format json``, or
    ``--logger-class flask_impulse.gunicorn_config.JsonLogger`` under your own gunicorn)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = JsonFormatter()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter)
        use_json_for_app_logs()


logger_class = RedactingLogger


def post_worker_init(worker: Any) -> None:
    # gunicorn's workers leave 0.1 s after SIGINT or SIGQUIT (the arbiter turns its own
    # SIGINT into SIGQUIT for them), which would cut every stream at once: drain instead,
    # exactly as on SIGTERM. The arbiter still kills a worker after graceful_timeout.
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, functools.partial(_leave_gracefully, worker))
        signal.siginterrupt(signum, False)
    allow_direct_writes(frames_plain_http1(worker.cfg))
    # The cyclic garbage collector's youngest generation is collected every 7,000 allocations
    # rather than 700. A stream opened allocates dozens of objects that live as long as it,
    # and collections kept walking them: at 10,000 streams the collector took 5 to 10% of what
    # opening a stream cost. Cyclic garbage is still collected, a little later. (Not
    # gc.freeze(): the frozen logging handlers are then finalized after gevent at exit.)
    gc.set_threshold(7_000, *gc.get_threshold()[1:])
    gevent.spawn(_drain_on_exit, worker)


def frames_plain_http1(cfg: Any) -> bool:
    """Whether gunicorn frames every stream as plain HTTP/1.x (chunked for 1.1, raw for 1.0), so
    that the event loop may write frames to a stream's socket itself. Not under TLS, HTTP/2
    or the uwsgi protocol, where the socket carries another framing."""
    return (
        not cfg.is_ssl
        and getattr(cfg, "protocol", "http") == "http"
        and "h2" not in (getattr(cfg, "http_protocols", None) or ["h1"])
    )


def on_starting(server: Any) -> None:
    # Where workers publish their stream counts, for /health's instance-wide figure.
    instance.create_directory()


def on_exit(server: Any) -> None:
    instance.remove_directory()


def child_exit(server: Any, worker: Any) -> None:
    forget_worker(worker.pid)
    instance.forget_worker(worker.pid)


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
    # What gunicorn's own hook logs, without a call through its logger per request.
    error_log = getattr(worker.log, "error_log", None)  # any logger_class may be configured
    if error_log is None or error_log.isEnabledFor(logging.DEBUG):
        worker.log.debug("%s %s", req.method, req.path)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    _open_requests.discard(req)
