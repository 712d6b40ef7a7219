"""Chat rooms and private notifications: what is posted in a room appears live in every page
open on that room, and a notification reaches only the user it names.

Run it with one command, then open http://127.0.0.1:5000/ in two windows::

    python examples/chat/app.py [--host 127.0.0.1] [--port 5000]

A room is a topic: the page subscribes with a plain ``EventSource`` to
``/realtime?channel=chat:message&topic=<room>`` and ``POST /messages`` pushes with
``topic=<room>``. A private notification goes by token: ``POST /session`` gives the page an
opaque token of its own, a second ``EventSource`` subscribes to ``notification:new`` with it,
and ``POST /notifications`` pushes with ``tokens=`` the recipient's tokens. Everything is
pushed in-process with ``impulse.push()``, so no push secret is needed.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import unicodedata
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from flask_impulse import Impulse

CHANNEL = "chat:message"
NOTIFICATION_CHANNEL = "notification:new"
ROOMS = ("general", "random")
DEFAULT_ROOM = ROOMS[0]
ROOM_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
ROOM_RULE = "room must be 1 to 32 lowercase letters, digits, '-' or '_', starting with a letter or digit"
MAX_AUTHOR_LENGTH = 40
MAX_TEXT_LENGTH = 1000
MAX_SESSIONS = 1000

app = Flask(__name__)
# A chat message is small; anything bigger is refused with 413 before it is read.
app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
impulse = Impulse(app)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")


class InvalidMessage(ValueError):
    """A posted message that cannot be shown; its text is the answer's ``error``."""


class Sessions:
    """Opaque subscriber tokens, in memory: each ``open()`` issues a fresh random token for a name.

    A token is only ever sent to the page that opened the session; a notification for a name
    goes to every token that name holds (one per open page). The oldest sessions are forgotten
    past ``limit``, which bounds the memory and the scan in ``tokens_of`` alike.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._names: OrderedDict[str, str] = OrderedDict()  # token -> name

    def open(self, name: str) -> str:
        token = secrets.token_urlsafe(24)
        self._names[token] = name
        while len(self._names) > self.limit:
            self._names.popitem(last=False)
        return token

    def name_of(self, token: str) -> str | None:
        return self._names.get(token)

    def tokens_of(self, name: str) -> list[str]:
        wanted = name.casefold()
        return [token for token, owner in self._names.items() if owner.casefold() == wanted]


sessions = Sessions(MAX_SESSIONS)


@app.get("/")
def index() -> Any:
    try:
        room = parse_room(request.args.get("room", DEFAULT_ROOM))
    except InvalidMessage as exc:
        return jsonify(error=str(exc)), 400
    return render_template(
        "index.html",
        channel=CHANNEL,
        notification_channel=NOTIFICATION_CHANNEL,
        room=room,
        rooms=ROOMS if room in ROOMS else (*ROOMS, room),
        max_author=MAX_AUTHOR_LENGTH,
        max_text=MAX_TEXT_LENGTH,
    )


@app.post("/messages")
def post_message() -> tuple[Any, int]:
    body = request.get_json(force=True, silent=True)
    try:
        message = parse_message(body)
        room = parse_room(body.get("room", DEFAULT_ROOM))
    except InvalidMessage as exc:
        return jsonify(error=str(exc)), 400
    sent = impulse.push(CHANNEL, message, topic=room)
    return jsonify(message=message, room=room, sent=sent), 201


@app.post("/session")
def open_session() -> tuple[Any, int]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return jsonify(error='send a JSON object: {"name": "..."}'), 400
    try:
        name = _clean(body.get("name"), "name", MAX_AUTHOR_LENGTH, multiline=False)
    except InvalidMessage as exc:
        return jsonify(error=str(exc)), 400
    return jsonify(name=name, token=sessions.open(name)), 201


@app.post("/notifications")
def post_notification() -> tuple[Any, int]:
    # The sender proves its session with its own token; the recipient's tokens never leave the server.
    sender = sessions.name_of(request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
    if sender is None:
        return jsonify(error="open a session first (POST /session) and send its token as a Bearer token"), 401
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return jsonify(error='send a JSON object: {"to": "...", "text": "..."}'), 400
    try:
        recipient = _clean(body.get("to"), "to", MAX_AUTHOR_LENGTH, multiline=False)
        text = _clean(body.get("text"), "text", MAX_TEXT_LENGTH, multiline=True)
    except InvalidMessage as exc:
        return jsonify(error=str(exc)), 400
    tokens = sessions.tokens_of(recipient)
    if not tokens:
        return jsonify(error=f"{recipient} has no open session"), 404
    notification = {"from": sender, "text": text, "sentAt": _now()}
    sent = impulse.push(NOTIFICATION_CHANNEL, notification, tokens=tokens)
    return jsonify(notification=notification, sent=sent), 201


def parse_message(body: object) -> dict[str, str]:
    """The message to broadcast, from a posted ``{"author": ..., "text": ...}``."""
    if not isinstance(body, dict):
        raise InvalidMessage('send a JSON object: {"author": "...", "text": "..."}')
    author = body.get("author")
    if author is None or (isinstance(author, str) and not author.strip()):
        author = "Anonymous"
    author = _clean(author, "author", MAX_AUTHOR_LENGTH, multiline=False)
    text = _clean(body.get("text"), "text", MAX_TEXT_LENGTH, multiline=True)
    return {"author": author, "text": text, "sentAt": _now()}


def parse_room(room: object) -> str:
    """A room name is a topic, and also shows in URLs: a short, plain slug."""
    if not isinstance(room, str) or not ROOM_PATTERN.fullmatch(room):
        raise InvalidMessage(ROOM_RULE)
    return room


def _now() -> str:
    # The server stamps the time, so every page shows the same one.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
