"""``flask-impulse``: the standalone service, run by gunicorn with gevent workers."""

from __future__ import annotations

import argparse
import os
import resource
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from gunicorn.app.base import BaseApplication

from .. import __version__, gunicorn_config
from ..channels import Channel, load_channels
from ..config import log
from ..errors import ConfigurationError
from ..state import EXTENSION_KEY
from .logformat import FORMATS, use_json_for_app_logs
from .service import combine_secrets, config_from_environment, create_app, rotation_secrets, truthy


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="flask-impulse",
        description="Impulse Realtime SSE broker: subscribe with GET /?channel=..., push with POST /.",
        epilog="flask-impulse typescript --app MODULE[:NAME]: emit the TypeScript types of declared channels.",
    )
    parser.add_argument("--host", default=env.get("HOST", "0.0.0.0"), help="interface to bind (HOST; default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "8080")), help="port (PORT; default 8080)")
    parser.add_argument(
        "--secret",
        action="append",
        default=None,
        help="push secret (REALTIME_SECRET); repeat it to accept several while rotating (REALTIME_SECRETS=a,b)",
    )
    parser.add_argument(
        "--no-auth", action="store_true", help="accept pushes without a secret (local development only)"
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis backplane, shared by every worker and replica (REDIS_URL; pip install flask-impulse[redis])",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env.get("WEB_CONCURRENCY", "1")),
        help="worker processes (WEB_CONCURRENCY); above 1 needs --redis-url",
    )
    parser.add_argument(
        "--worker-connections",
        type=int,
        default=gunicorn_config.worker_connections,
        help=f"streams per worker (default {gunicorn_config.worker_connections})",
    )
    parser.add_argument(
        "--channels",
        default=env.get("IMPULSE_CHANNELS") or None,
        metavar="MODULE[:NAME]",
        help="declare the channels of MODULE (its top-level Channels, or NAME: a list, an Impulse or an app), "
        "so pushes on them are validated (IMPULSE_CHANNELS)",
    )
    parser.add_argument(
        "--certfile",
        default=env.get("IMPULSE_TLS_CERTFILE") or None,
        help="serve HTTPS with this PEM certificate (chain) file (IMPULSE_TLS_CERTFILE); needs --keyfile",
    )
    parser.add_argument(
        "--keyfile",
        default=env.get("IMPULSE_TLS_KEYFILE") or None,
        help="the PEM private key of --certfile (IMPULSE_TLS_KEYFILE)",
    )
    parser.add_argument("--log-level", default="info", help="gunicorn log level (default info)")
    parser.add_argument(
        "--access-log",
        action="store_true",
        default=truthy(env.get("IMPULSE_ACCESS_LOG", "")),
        help="log one line per request, tokens redacted (IMPULSE_ACCESS_LOG); off by default: a line costs "
        "a push about 200 µs and blocks the worker while it is written. Refused requests are always logged",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=env.get("IMPULSE_LOG_FORMAT", "text"),
        help="text, or json: one JSON object per line for every log (IMPULSE_LOG_FORMAT; default text)",
    )
    parser.add_argument("--version", action="version", version=f"flask-impulse {__version__}")
    return parser


def service_config(args: argparse.Namespace) -> dict[str, Any]:
    config = config_from_environment()
    if args.secret:
        # --secret stands for REALTIME_SECRET (the current one); the rotation list still holds.
        config["IMPULSE_SECRET"] = combine_secrets(args.secret, rotation_secrets())
    if args.no_auth:
        config["IMPULSE_PUSH_WITHOUT_SECRET"] = True
    if args.redis_url:
        config["IMPULSE_REDIS_URL"] = args.redis_url
    if not config.get("IMPULSE_SECRET") and not config.get("IMPULSE_PUSH_WITHOUT_SECRET"):
        raise ConfigurationError(
            "No push secret: pass --secret or set REALTIME_SECRET. "
            "To run without authentication on purpose, pass --no-auth."
        )
    if args.workers > 1 and not config.get("IMPULSE_REDIS_URL"):
        raise ConfigurationError(
            "--workers above 1 needs a shared backplane: each worker holds its own streams, and a push "
            "taken by one worker would never reach the streams of another. Run one worker "
            "(it holds 10,000+ streams) or configure Redis."
        )
    check_tls(args.certfile, args.keyfile)
    if args.log_format not in FORMATS:  # from IMPULSE_LOG_FORMAT, which argparse does not check
        raise ConfigurationError(f"IMPULSE_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {args.log_format!r}")
    return config


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Both files or neither, and readable: found here rather than by a worker that cannot boot."""
    if bool(certfile) != bool(keyfile):
        raise ConfigurationError(
            "HTTPS needs both --certfile and --keyfile (IMPULSE_TLS_CERTFILE and IMPULSE_TLS_KEYFILE)"
        )
    for name, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path and not os.access(path, os.R_OK):
            raise ConfigurationError(f"{name} {path!r} is not a readable file")


def declared_channels(spec: str | None) -> list[Channel[Any]]:
    """The channels of ``--channels``, imported from the working directory as ``flask --app`` does."""
    if not spec:
        return []
    if os.getcwd() not in sys.path:  # the console script's path holds its own directory, not the cwd
        sys.path.insert(0, os.getcwd())
    return load_channels(spec)


def production_checks(app: Flask, log_level: str) -> str:
    """``NODE_ENV=production``, read as the reference broker's documentation uses it: no debug
    output (the log level is raised to info), and a warning when any origin may subscribe."""
    settings = app.extensions[EXTENSION_KEY].settings
    if "*" in settings.cors_origins:
        log.warning(
            "NODE_ENV=production with CORS open to every origin (*): any web page can subscribe from "
            "its visitors' browsers; set CORS_ORIGIN to your front end's origin(s), comma-separated"
        )
    if log_level.lower() == "debug":
        log.warning("NODE_ENV=production: --log-level debug is raised to info")
        return "info"
    return log_level


def describe_backplane(redis_url: str | None) -> str:
    """Where messages are shared, for the startup line: never the URL's password."""
    if not redis_url:
        return "in memory"
    parts = urlsplit(redis_url)
    where = f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else parts.path
    return f"redis {where}"


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard one: every stream is a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class StandaloneService(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured from code, loading the service app in each worker."""

    def __init__(self, options: dict[str, Any], config: dict[str, Any], channels: list[Channel[Any]]) -> None:
        self.options = options
        self.service_config = config
        self.channels = channels
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.service_config, self.channels)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["typescript"]:
        from .commands import typescript_main

        return typescript_main(argv[1:])
    args = build_parser().parse_args(argv)
    json_logs = args.log_format == "json"
    if json_logs:
        use_json_for_app_logs()  # before the app exists, so that Flask adds no text handler
    try:
        config = service_config(args)
        channels = declared_channels(args.channels)
        app = create_app(config, channels)  # fail here, before forking, on any configuration error
    except (ConfigurationError, ValueError, ImportError) as exc:
        print(f"flask-impulse: {exc}", file=sys.stderr)
        return 2
    log_level = production_checks(app, args.log_level) if os.environ.get("NODE_ENV") == "production" else args.log_level
    open_files = raise_open_file_limit()
    auth = "on" if app.config["IMPULSE_SECRET"] else "OFF (--no-auth: anyone can push)"
    url = f"{'https' if args.certfile else 'http'}://{args.host}:{args.port}/"
    backplane = describe_backplane(app.config["IMPULSE_REDIS_URL"])

    def when_ready(server: Any) -> None:
        line = (
            f"flask-impulse {__version__} listening on {url} | push auth {auth} | backplane {backplane} | "
            f"workers {args.workers} x {args.worker_connections} streams | open files {open_files}"
        )
        if json_logs:
            server.log.info(line)
        else:
            print(line, flush=True)

    options = {
        "bind": f"{args.host}:{args.port}",
        "workers": args.workers,
        "worker_class": gunicorn_config.worker_class,
        "worker_connections": args.worker_connections,
        "timeout": gunicorn_config.timeout,
        "graceful_timeout": gunicorn_config.graceful_timeout,
        "keepalive": gunicorn_config.keepalive,
        "control_socket_disable": gunicorn_config.control_socket_disable,
        "limit_request_line": gunicorn_config.limit_request_line,
        "limit_request_fields": gunicorn_config.limit_request_fields,
        "limit_request_field_size": gunicorn_config.limit_request_field_size,
        "logger_class": gunicorn_config.JsonLogger if json_logs else gunicorn_config.RedactingLogger,
        "post_worker_init": gunicorn_config.post_worker_init,
        "pre_request": gunicorn_config.pre_request,
        "post_request": gunicorn_config.post_request,
        "child_exit": gunicorn_config.child_exit,
        "on_starting": gunicorn_config.on_starting,
        "on_exit": gunicorn_config.on_exit,
        "when_ready": when_ready,
        "accesslog": "-" if args.access_log else None,
        "loglevel": log_level,
    }
    if args.certfile:
        # gunicorn wraps each accepted socket; streams then go through its TLS writes, not the
        # direct writes of plain HTTP/1.1 (gunicorn_config.frames_plain_http1).
        options.update(certfile=args.certfile, keyfile=args.keyfile)
    StandaloneService(options, config, channels).run()
    return 0
