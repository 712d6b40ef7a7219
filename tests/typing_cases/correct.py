"""Typed channels used as intended: mypy --strict accepts every line. Type-checked by a test,
never run."""

from __future__ import annotations

from flask_impulse import Event, Impulse, PresenceEvent, RealtimeClient, ServerClient, SubscribeRequest

from .chat_types import ChatMessage, Point, Shape, chat_message, notification, shapes

impulse = Impulse(channels=[chat_message, notification, shapes])
message: ChatMessage = {"id": "1", "author": {"id": "u1", "name": "Ada"}, "text": "hi", "timestamp": 1.5}

impulse.push(chat_message, {"id": "2", "author": {"id": "u1", "name": "Ada"}, "text": "hello", "timestamp": 2.0})
impulse.push(chat_message, message, topic="room-1")
impulse.push(notification, {"id": "n1", "type": "info", "title": "Hi", "message": "Welcome"}, tokens=["t1"])
impulse.push(shapes, Shape("line", [Point(0, 0), Point(1, 1)]))
impulse.push("untyped:channel", {"anything": [1, "goes"]})
published_id: str = impulse.publish(chat_message, message).id
duplicate: bool = impulse.publish(chat_message, message, idempotency_key="order-1").duplicate
impulse.push("untyped:channel", 1, idempotency_key="order-2")

server = ServerClient("http://localhost:8080", token="secret")
sent: int = server.push(chat_message, message, tokens="t1", topic="room-1")
server.push("plain", 42)
server.push_many([chat_message(message, topic="room-2"), shapes(Shape("dot")), {"channel": "raw", "payload": 1}])
retried: bool = server.publish(chat_message, message, idempotency_key="order-3").duplicate
batch_ids: list[str] = [r.id for r in server.publish_many([chat_message(message, idempotency_key="order-4")])]


def show(event: Event[ChatMessage]) -> None:
    text: str = event.payload["text"]
    author: str = event.payload["author"]["name"]
    print(author, text, event.id, event.topic)


client = RealtimeClient("http://localhost:8080")
unsubscribe = client.subscribe(chat_message, show, topic="room-1")
client.subscribe(shapes, lambda event: print(event.payload.points[0].x))
client.subscribe("untyped", lambda event: print(event.payload["whatever"]))
for event in client.stream(notification, timeout=1.0):
    kind: str = event.payload["type"]
unsubscribe()


@impulse.authorize
def signed_in(subscription: SubscribeRequest) -> str | bool:
    return subscription.subject or False  # a subject names the stream's presence member


def who(presence: PresenceEvent) -> None:
    action: str = presence.action
    print(presence.channel, presence.member, action)


stop_watching = client.on_presence(chat_message, who, topic="room-1")
stop_watching()
