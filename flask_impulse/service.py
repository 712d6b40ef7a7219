"""The standalone service: a Flask app serving the blueprint at ``/``, configured from the
environment the way the reference broker is (``REALTIME_SECRET``, ``CORS_ORIGIN``, ...)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException

from .config import DEFAULTS
from .errors import ConfigurationError
from .extension import Impulse
from .views import error_response

#: The reference broker's environment variables, and the settings they stand for.
ENVIRONMENT_ALIASES = {
    "REALTIME_SECRET": "IMPULSE_SECRET",
    "CORS_ORIGIN": "IMPULSE_CORS_ORIGINS",
    "CORS_CREDENTIALS": "IMPULSE_CORS_CREDENTIALS",
    "HEALTH_CHECK_ENDPOINT": "IMPULSE_HEALTH_PATH",
    "HEALTH_CHECK_TOKEN": "IMPULSE_HEALTH_TOKEN",
    "REDIS_URL": "IMPULSE_REDIS_URL",
}


def config_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``IMPULSE_*`` settings from the environment; an ``IMPULSE_*`` name wins over its alias."""
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for alias, key in ENVIRONMENT_ALIASES.items():
        if environ.get(alias):
            config[key] = environ[alias]
    for key, default in DEFAULTS.items():
        if key in environ:
            config[key] = _coerce(key, environ[key], default)
    return config


def _coerce(key: str, value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    try:
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be a number, not {value!r}") from None
    return value


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The standalone service. ``config`` overrides the environment.

    Refuses to start without a push secret unless ``IMPULSE_PUSH_WITHOUT_SECRET`` says so:
    an open push endpoint lets anyone write to every subscriber.
    """
    app = Flask("flask_impulse.service")
    app.config.update(config_from_environment())
    app.config.update(config or {})
    if not app.config.get("IMPULSE_SECRET") and not app.config.get("IMPULSE_PUSH_WITHOUT_SECRET"):
        raise ConfigurationError(
            "No push secret: pass --secret or set REALTIME_SECRET. "
            "To run without authentication on purpose, pass --no-auth (IMPULSE_PUSH_WITHOUT_SECRET=1)."
        )
    impulse = Impulse(app)
    app.register_blueprint(impulse.blueprint)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    return app


def _http_error(exc: HTTPException) -> Response:
    return error_response(exc.code or 500, exc.name)


def _internal_error(exc: Exception) -> Response:
    current_app.logger.exception("Unhandled error")
    return error_response(500, "Internal server error")
