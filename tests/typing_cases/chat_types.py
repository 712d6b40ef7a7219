"""Channels declared once, typed for mypy, validated at runtime and emitted as TypeScript."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NotRequired, TypedDict

from flask_impulse import Channel


class Author(TypedDict):
    id: str
    name: str


class ChatMessage(TypedDict):
    """A message posted in a room."""

    id: str
    author: Author
    text: str
    timestamp: float
    reactions: NotRequired[dict[str, int]]


class Notification(TypedDict):
    id: str
    type: Literal["info", "warning", "error", "success"]
    title: str
    message: str
    userId: NotRequired[str | None]


@dataclass
class Point:
    x: float
    y: float


@dataclass
class Shape:
    name: str
    points: list[Point] = field(default_factory=list)


chat_message = Channel("chat:message", ChatMessage)
notification = Channel("notification:new", Notification)
shapes = Channel("shapes", Shape)
