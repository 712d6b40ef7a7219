"""A chat room: a message posted in one browser appears live in every other one.

Run it with one command, then open http://127.0.0.1:5000/ in two windows::

    python examples/chat/app.py [--host 127.0.0.1] [--port 5000]

The page subscribes with a plain ``EventSource`` to ``/realtime?channel=chat:message``;
posting a message calls ``impulse.push()`` in-process, so no push secret is needed.
"""

from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from flask_impulse import Impulse

CHANNEL = "chat:message"
MAX_AUTHOR_LENGTH = 40
MAX_TEXT_LENGTH = 1000

app = Flask(__name__)
# A chat message is small; anything bigger is refused with 413 before it is read.
app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
impulse = Impulse(app)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")


class InvalidMessage(ValueError):
    """A posted message that cannot be shown; its text is the answer's ``error``."""


@app.get("/")
def index() -> str:
    return render_template("index.html", channel=CHANNEL, max_author=MAX_AUTHOR_LENGTH, max_text=MAX_TEXT_LENGTH)


@app.post("/messages")
def post_message() -> tuple[Any, int]:
    body = request.get_json(force=True, silent=True)
    try:
        message = parse_message(body)
    except InvalidMessage as exc:
        return jsonify(error=str(exc)), 400
    sent = impulse.push(CHANNEL, message)
    return jsonify(message=message, sent=sent), 201


def parse_message(body: object) -> dict[str, str]:
    """The message to broadcast, from a posted ``{"author": ..., "text": ...}``."""
    if not isinstance(body, dict):
        raise InvalidMessage('send a JSON object: {"author": "...", "text": "..."}')
    author = body.get("author")
    if author is None or (isinstance(author, str) and not author.strip()):
        author = "Anonymous"
    author = _clean(author, "author", MAX_AUTHOR_LENGTH, multiline=False)
    text = _clean(body.get("text"), "text", MAX_TEXT_LENGTH, multiline=True)
    # The server stamps the time, so every page shows the same one.
    sent_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return {"author": author, "text": text, "sentAt": sent_at}


def _clean(value: object, name: str, max_length: int, *, multiline: bool) -> str:
    if not isinstance(value, str):
        raise InvalidMessage(f"{name} must be a string")
    value = value.strip()
    if not value:
        raise InvalidMessage(f"{name} must not be empty")
    if len(value) > max_length:
        raise InvalidMessage(f"{name} may hold at most {max_length} characters")
    allowed = "\n\t" if multiline else ""
    if any(unicodedata.category(char) == "Cc" and char not in allowed for char in value):
        raise InvalidMessage(f"{name} must not contain control characters")
    return value


@app.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> tuple[Any, int]:
    # Errors are JSON, like flask-impulse's own, so the page can show them.
    return jsonify(error=exc.name), exc.code or 500


def main(argv: list[str] | None = None) -> None:
    """Serve this app the way flask-impulse apps are deployed: gunicorn with gevent workers.

    This process becomes exactly the gunicorn command that the README shows, so the app is
    imported fresh in the worker, after gevent has patched the standard library.
    """
    parser = argparse.ArgumentParser(description="flask-impulse chat example")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="default 127.0.0.1 (HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")), help="default 5000 (PORT)")
    args = parser.parse_args(argv)
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
    print(f"Chat on http://{args.host}:{args.port}/ : open it in two browser windows.", flush=True)
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
