"""Typed channels misused: each line marked ``# expect: CODE`` is an error mypy must report.
Type-checked by a test, never run."""

from __future__ import annotations

from flask_impulse import Event, Impulse, RealtimeClient, ServerClient

from .chat_types import Author, Notification, Point, chat_message, notification, shapes

impulse = Impulse(channels=[chat_message, notification, shapes])
server = ServerClient("http://localhost:8080", token="secret")
client = RealtimeClient("http://localhost:8080")

author: Author = {"id": "u1", "name": "Ada"}
impulse.push(chat_message, {"id": "1", "author": author, "text": 3, "timestamp": 1.0})  # expect: call-overload
impulse.push(chat_message, {"id": "1", "text": "no author", "timestamp": 1.0})  # expect: call-overload
impulse.push(notification, {"id": "n", "type": "urgent", "title": "t", "message": "m"})  # expect: call-overload
impulse.push(shapes, Point(1, 2))  # expect: call-overload
impulse.push(chat_message, {"id": "1", "author": author, "text": "t", "timestamp": 1.0}, topic=7)  # expect: arg-type
server.push(shapes, {"name": "not a dataclass"})  # expect: call-overload
server.push_many([shapes(Point(0, 0))])  # expect: arg-type


def on_notification(event: Event[Notification]) -> None:
    print(event.payload["title"])


client.subscribe(chat_message, on_notification)  # expect: arg-type
client.subscribe(chat_message, lambda event: print(event.payload["missing"]))  # expect: typeddict-item
client.subscribe(shapes, lambda event: print(event.payload.name.upper() + 1))  # expect: operator
