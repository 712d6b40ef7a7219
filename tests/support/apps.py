"""Apps built by hand for Flask's test client: a user's app, with or without flask-impulse."""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_impulse import Impulse
from flask_impulse.broker import MemoryBackplane
from flask_impulse.config import Settings

from .secrets import PUSH_SECRET

#: Where :func:`make_app` mounts the blueprint: a prefix, as most embedding apps use one.
PREFIX = "/rt"


def flask_app(**config: Any) -> Flask:
    """A user's app holding ``config``, with nothing registered yet."""
    app = Flask(__name__)
    app.config.update(config)
    return app


def make_app(extension: type[Impulse] = Impulse, **config: Any) -> tuple[Flask, Impulse]:
    """A user's app with ``extension`` mounted at ``/rt``; the push secret is set unless
    ``config`` says otherwise."""
    app = flask_app(**{"IMPULSE_SECRET": PUSH_SECRET, **config})
    impulse = extension(app)
    app.register_blueprint(impulse.blueprint, url_prefix=PREFIX)
    return app, impulse


def with_backplane(backplane: type[MemoryBackplane]) -> type[Impulse]:
    """An Impulse whose broker runs on ``backplane`` (a MemoryBackplane with a defect, say)."""

    class CustomImpulse(Impulse):
        def create_backplane(self, settings: Settings) -> MemoryBackplane:
            return backplane(settings.history_size, settings.history_ttl)

    return CustomImpulse
