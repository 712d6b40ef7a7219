"""The standalone service: a Flask app serving the blueprint at ``/``, configured from the
environment the way the reference broker is (``REALTIME_SECRET``, ``CORS_ORIGIN``, ...)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, Response, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from ..channels import Channel
from ..config import DEFAULTS
from ..errors import ConfigurationError
from ..extension import Impulse
from ..security.headers import add_security_headers
from ..state import EXTENSION_KEY
from ..views import handle_error
from .hotpath import HotPath

#: The reference broker's environment variables, and the settings they stand for.
ENVIRONMENT_ALIASES = {
    "REALTIME_SECRET": "IMPULSE_SECRET",
    "CORS_ORIGIN": "IMPULSE_CORS_ORIGINS",
    "CORS_CREDENTIALS": "IMPULSE_CORS_CREDENTIALS",
    "HEALTH_CHECK_ENDPOINT": "IMPULSE_HEALTH_PATH",
    "HEALTH_CHECK_TOKEN": "IMPULSE_HEALTH_TOKEN",
    "REDIS_URL": "IMPULSE_REDIS_URL",
    "REALTIME_JWT_SECRET": "IMPULSE_JWT_SECRET",
    "REALTIME_JWT_PUBLIC_KEY": "IMPULSE_JWT_PUBLIC_KEY",
    "HELMET_ENABLED": "IMPULSE_SECURITY_HEADERS",
}
#: Comma-separated lists of push secrets, valid alongside REALTIME_SECRET: for rotation.
SECRET_LISTS = ("REALTIME_SECRETS", "IMPULSE_SECRETS")


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
    current = [config["IMPULSE_SECRET"]] if config.get("IMPULSE_SECRET") else []
    secrets = combine_secrets(current, rotation_secrets(environ))
    if secrets:
        config["IMPULSE_SECRET"] = secrets
    return config


def rotation_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The push secrets of ``REALTIME_SECRETS`` / ``IMPULSE_SECRETS``, valid beside the current one."""
    environ = os.environ if environ is None else environ
    return [item.strip() for name in SECRET_LISTS for item in environ.get(name, "").split(",") if item.strip()]


def combine_secrets(current: list[str], rotation: list[str]) -> str | list[str]:
    """One ``IMPULSE_SECRET`` value: the current secret(s) first, since the token hash key is
    derived from the first, then the rotation list, without repeats."""
    secrets = list(dict.fromkeys([*current, *rotation]))
    return secrets[0] if len(secrets) == 1 else secrets


def truthy(value: str) -> bool:
    """An environment variable's yes or no, as every boolean setting reads it."""
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _coerce(key: str, value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return truthy(value)
    try:
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be a number, not {value!r}") from None
    return value


def create_app(config: Mapping[str, Any] | None = None, channels: Iterable[Channel[Any]] = ()) -> Flask:
    """The standalone service. ``config`` overrides the environment. ``channels`` are declared
    on it, so pushes on them are validated here as in an embedding app (``--channels``).

    Refuses to start without a push secret unless ``IMPULSE_PUSH_WITHOUT_SECRET`` says so:
    an open push endpoint lets anyone write to every subscriber.
    """
    # No static folder: Flask's /static/ route would serve the browser client a second time,
    # with a guessed content type and without CORS; it lives at /client.js and /client.d.ts.
    app = Flask(__name__, static_folder=None)
    app.config.update(config_from_environment())
    app.config.update(config or {})
    if not app.config.get("IMPULSE_SECRET") and not app.config.get("IMPULSE_PUSH_WITHOUT_SECRET"):
        # Words for gunicorn and embedding apps: the CLI refuses first, naming its own flags.
        raise ConfigurationError(
            "No push secret: set REALTIME_SECRET (or IMPULSE_SECRET; REALTIME_SECRETS for several). "
            "To run without authentication on purpose, set IMPULSE_PUSH_WITHOUT_SECRET=true."
        )
    impulse = Impulse(app, channels=channels)
    app.register_blueprint(impulse.blueprint)
    # Pushes and streams skip Flask's request cycle; everything else goes on to the app.
    app.wsgi_app = HotPath(app, app.wsgi_app)  # type: ignore[method-assign]
    trusted_proxies = int(app.config["IMPULSE_TRUSTED_PROXIES"])
    if trusted_proxies:
        # The client address (per-IP quotas, access logs) from X-Forwarded-For, as far back
        # as the trusted proxies vouch for it; the rest of that header is the client's word.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxies)  # type: ignore[method-assign]
    # Outside the blueprint too (a 404 elsewhere, a 405, a 500): the same JSON answers.
    app.register_error_handler(Exception, handle_error)
    app.after_request(_security_headers_outside_the_blueprint)
    return app


def _security_headers_outside_the_blueprint(response: Response) -> Response:
    """The whole app is the service: a request no route of the blueprint takes (a method it
    does not list, such as TRACE) is answered here, with the same headers."""
    if request.blueprint is None and current_app.extensions[EXTENSION_KEY].settings.security_headers:
        add_security_headers(response.headers)
    return response
