"""Payload types that exercise every TypeScript mapping."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from flask_impulse import Channel


class Status(enum.Enum):
    up = "up"
    down = "down"


@dataclass
class Node:
    label: str
    children: list[Node] = field(default_factory=list)


Everything = TypedDict(
    "Everything",
    {
        "tree": Node,
        "level": Literal["low", "high", 3, True],
        "pair": tuple[int, str],
        "tags": list[str | None],
        "counts": dict[str, int],
        "status": Status,
        "user-id": str,
        "at": datetime.datetime,
        "anything": Any,
    },
)

everything = Channel("everything", Everything)
