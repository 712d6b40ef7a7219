"""Presence in one process: who is counted on a presence channel, what GET BASE/presence
answers and refuses, and the bound on the members listed (Flask's test client: a stream
counts from its opening until its response is closed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, cast

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from flask_impulse import ConfigurationError
from flask_impulse.broker import Connection, Message
from flask_impulse.errors import Refusal
from flask_impulse.presence import Presence
from flask_impulse.sse import SSEDecoder
from tests.support import secrets
from tests.support.apps import PUSH_SECRET, make_app
from tests.support.secrets import make_token

AUTH = {"Authorization": f"Bearer {PUSH_SECRET}"}


@contextmanager
def streams(app: Flask, *queries: str) -> Iterator[list[TestResponse]]:
    """Open a stream per query; each is counted until closed (at the block's end at the latest)."""
    client = app.test_client()
    with ExitStack() as stack:
        opened = []
        for query in queries:
            response = client.get(f"/rt/?{query}", buffered=False)
            assert response.status_code == 200, response.get_data()
            stack.callback(response.close)
            opened.append(response)
        yield opened


def presence_of(app: Flask, channel: str, headers: dict[str, str] | None = AUTH) -> tuple[int, Any]:
    response = app.test_client().get("/rt/presence", query_string={"channel": channel}, headers=headers)
    return response.status_code, response.get_json()


def test_two_members_three_streams_then_each_leaves_with_its_last_stream() -> None:
    app, impulse = make_app(IMPULSE_PRESENCE_CHANNELS="room:*,doc:*")
    queries = ("channel=room:a&clientId=alice", "channel=room:a&clientId=alice", "channel=room:a&clientId=bob")
    with streams(app, *queries) as (alice1, alice2, bob):
        status, answer = presence_of(app, "room:a")
        assert status == 200
        assert answer == {
            "channel": "room:a",
            "connections": 3,
            "memberCount": 2,
            "members": [{"id": "alice", "connections": 2}, {"id": "bob", "connections": 1}],
        }
        alice1.close()
        assert presence_of(app, "room:a")[1]["members"] == [
            {"id": "alice", "connections": 1},
            {"id": "bob", "connections": 1},
        ]
        alice2.close()
        with app.app_context():
            assert impulse.presence("room:a")["members"] == [{"id": "bob", "connections": 1}]
        bob.close()
    assert presence_of(app, "room:a")[1] == {"channel": "room:a", "connections": 0, "memberCount": 0, "members": []}


def test_a_stream_without_client_id_is_a_connection_without_a_member() -> None:
    app, _ = make_app(IMPULSE_PRESENCE_CHANNELS="room:*")
    with streams(app, "channel=room:a", "channel=room:a&channel=lobby&clientId=carol"):
        assert presence_of(app, "room:a")[1]["connections"] == 2
        assert presence_of(app, "room:a")[1]["members"] == [{"id": "carol", "connections": 1}]
        assert presence_of(app, "lobby")[0] == 404  # the same stream, on a channel not under presence


def test_jwt_mode_counts_the_verified_subject_and_ignores_client_id() -> None:
    app, _ = make_app(IMPULSE_JWT_SECRET=secrets.JWT_SECRET, IMPULSE_PRESENCE_CHANNELS="room:*")
    token = make_token("alice", ["room:*"])
    with streams(app, f"channel=room:a&token={token}&clientId=mallory"):
        assert presence_of(app, "room:a")[1]["members"] == [{"id": "alice", "connections": 1}]


def test_the_subject_an_authorize_hook_returns_is_the_member_and_client_id_is_ignored() -> None:
    app, impulse = make_app(IMPULSE_PRESENCE_CHANNELS="room:*")
    # The app's own word for who the stream is: here a header its session layer would set.
    impulse.authorize(lambda subscription: subscription.request.headers.get("X-User") or False)
    client = app.test_client()
    response = client.get("/rt/?channel=room:a&clientId=mallory", headers={"X-User": "alice"}, buffered=False)
    try:
        assert response.status_code == 200
        assert presence_of(app, "room:a")[1]["members"] == [{"id": "alice", "connections": 1}]
    finally:
        response.close()
    assert client.get("/rt/?channel=room:a&clientId=mallory").status_code == 403


def test_a_hook_that_returns_true_keeps_client_id_as_the_member() -> None:
    app, impulse = make_app(IMPULSE_PRESENCE_CHANNELS="room:*")
    impulse.authorize(lambda subscription: True)
    with streams(app, "channel=room:a&clientId=bob"):
        assert presence_of(app, "room:a")[1]["members"] == [{"id": "bob", "connections": 1}]


def test_a_hook_subject_wins_over_the_token_subject_in_jwt_mode() -> None:
    app, impulse = make_app(IMPULSE_JWT_SECRET=secrets.JWT_SECRET, IMPULSE_PRESENCE_CHANNELS="room:*")
    impulse.authorize(lambda subscription: f"user:{subscription.subject}")
    token = make_token("alice", ["room:*"])
    with streams(app, f"channel=room:a&token={token}"):
        assert presence_of(app, "room:a")[1]["members"] == [{"id": "user:alice", "connections": 1}]


def test_hooks_naming_different_subjects_refuse_the_stream() -> None:
    app, impulse = make_app(IMPULSE_PRESENCE_CHANNELS="room:*", DEBUG=True)
    impulse.authorize(lambda subscription: subscription.channel)  # a different subject per channel
    response = app.test_client().get("/rt/?channel=room:a&channel=room:b")
    assert response.status_code == 403
    assert response.get_json()["details"] == "the authorize hooks named different subjects"


def test_a_hook_subject_with_a_control_character_is_refused_as_bad_input() -> None:
    app, impulse = make_app(IMPULSE_PRESENCE_CHANNELS="room:*")
    impulse.authorize(lambda subscription: "alice\nbob")
    response = app.test_client().get("/rt/?channel=room:a")
    assert response.status_code == 400
    assert response.get_json()["error"] == "Invalid subject"


def test_members_are_listed_up_to_the_bound_then_only_counted() -> None:
    app, _ = make_app(IMPULSE_PRESENCE_CHANNELS="room:*", IMPULSE_PRESENCE_MAX_MEMBERS=2)
    with streams(app, *(f"channel=room:a&clientId=m{i}" for i in range(3))):
        answer = presence_of(app, "room:a")[1]
    assert answer == {
        "channel": "room:a",
        "connections": 3,
        "memberCount": 3,
        "members": [{"id": "m0", "connections": 1}, {"id": "m1", "connections": 1}],
        "truncated": True,
    }


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("channel=room:a", None, 401),
        ("channel=room:a", {"Authorization": "Bearer wrong"}, 403),
        ("channel=lobby", AUTH, 404),
        ("", AUTH, 400),
        ("channel=room:%01", AUTH, 400),
    ],
)
def test_presence_refuses_as_push_does(query: str, headers: dict[str, str] | None, status: int) -> None:
    app, _ = make_app(IMPULSE_PRESENCE_CHANNELS="room:*")
    response = app.test_client().get(f"/rt/presence?{query}", headers=headers)
    assert response.status_code == status
    assert "error" in response.get_json()


def test_without_presence_channels_there_is_no_presence_endpoint() -> None:
    app, impulse = make_app()
    assert presence_of(app, "room:a")[0] == 404
    with app.app_context(), pytest.raises(Refusal):
        impulse.presence("room:a")


def test_a_bad_client_id_refuses_the_stream_and_counts_nothing() -> None:
    app, _ = make_app(IMPULSE_PRESENCE_CHANNELS="room:*")
    response = app.test_client().get("/rt/?channel=room:a&clientId=a%0Ab")
    assert response.status_code == 400
    assert "clientId" in response.get_json()["details"]
    assert presence_of(app, "room:a")[1]["connections"] == 0


def test_a_negative_member_bound_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="IMPULSE_PRESENCE_MAX_MEMBERS"):
        make_app(IMPULSE_PRESENCE_CHANNELS="room:*", IMPULSE_PRESENCE_MAX_MEMBERS=-1)


class Recorder:
    """A stream's stand-in that keeps what it is offered."""

    def __init__(self, *channels: str) -> None:
        self.channels = channels
        self.frames: list[bytes] = []

    def offer(self, message: Message) -> bool:
        self.frames.append(message.frame)
        return True


def test_join_and_leave_go_in_order_to_watching_streams_only() -> None:
    presence = Presence(["room:*"], 100)
    watcher, plain = Recorder("room:a"), Recorder("room:a")
    alice1, alice2, bob = Recorder("room:a"), Recorder("room:a"), Recorder("room:a", "lobby")
    presence.enter(cast(Connection, watcher), None, watch=True)
    presence.enter(cast(Connection, plain), "carol", watch=False)
    for stream, member in ((alice1, "alice"), (alice2, "alice"), (bob, "bob")):
        presence.enter(cast(Connection, stream), member, watch=False)
    for stream in (alice1, bob, alice2):
        presence.leave(cast(Connection, stream))
    presence.leave(cast(Connection, bob))  # a second release changes nothing
    decoder = SSEDecoder()
    events = [(e.event, json.loads(e.data)) for e in decoder.feed(b"".join(watcher.frames))]
    assert events == [
        ("presence", {"channel": "room:a", "member": "carol", "action": "join"}),
        ("presence", {"channel": "room:a", "member": "alice", "action": "join"}),
        ("presence", {"channel": "room:a", "member": "bob", "action": "join"}),
        ("presence", {"channel": "room:a", "member": "bob", "action": "leave"}),
        ("presence", {"channel": "room:a", "member": "alice", "action": "leave"}),
    ]
    assert plain.frames == [] and alice1.frames == []
    assert presence.snapshot("room:a")["members"] == [{"id": "carol", "connections": 1}]
