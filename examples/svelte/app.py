"""Svelte example: a page built with esbuild from the npm package, served beside flask-impulse.

``./run`` builds ``dist/app.js`` and starts this app; push an order with
``curl -X POST http://127.0.0.1:5005/realtime/ -H "Authorization: Bearer $REALTIME_SECRET" ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TypedDict

from flask import Flask, Response, send_from_directory

from flask_impulse import Channel, Impulse

HERE = Path(__file__).resolve().parent


class Order(TypedDict):
    customer: str
    total: float


order = Channel("order:placed", Order)

app = Flask(__name__)
app.config["IMPULSE_SECRET"] = os.environ.get("REALTIME_SECRET", "svelte-example-secret-of-32-characters")
impulse = Impulse(app, channels=[order])
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")


@app.get("/")
def index() -> Response:
    return send_from_directory(HERE, "index.html")


@app.get("/app.js")
def bundle() -> Response:
    """The page's script, as ``./build`` made it."""
    return send_from_directory(HERE / "dist", "app.js", mimetype="text/javascript")


def main(argv: list[str] | None = None) -> None:
    """Serve the app as flask-impulse apps are deployed: gunicorn with gevent workers."""
    parser = argparse.ArgumentParser(description="flask-impulse Svelte example")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="default 127.0.0.1 (HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5005")), help="default 5005 (PORT)")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "gunicorn", "-c", "python:flask_impulse.gunicorn_config",
               "--chdir", str(HERE), "--bind", f"{args.host}:{args.port}", "app:app"]  # fmt: skip
    print(f"Svelte example on http://{args.host}:{args.port}/", flush=True)
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
