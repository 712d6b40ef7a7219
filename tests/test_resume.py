"""Ids and resume (docs/protocol.md sections 2.1 to 2.3) against a live gunicorn + gevent server: a client
that drops and comes back with Last-Event-ID gets what it missed exactly once, in order, and
only what its audience allows; an id that cannot be honoured gives ``event: gap`` first."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.apps.faults import SECRET
from tests.conftest import Service, serve
from tests.support.resuming_client import ResumingClient
from tests.support.streams import SSEStream, unique

pytestmark = [pytest.mark.live, pytest.mark.node]

TOTAL = 1000


@pytest.fixture(scope="module")
def faults() -> Iterator[Service]:
    """flask-impulse embedded under /realtime in tests/apps/faults.py, default history (1,000 per channel)."""
    with serve("tests.apps.faults:app", "resume", "/realtime", secret=SECRET) as service:
        yield service


def audience_of(index: int) -> dict[str, Any] | None:
    """Messages cycle through: everyone, topic "room", token alice, token bob in topic "room"."""
    return [None, {"topic": "room"}, {"tokens": ["alice"]}, {"tokens": "bob", "topic": "room"}][index % 4]


SUBSCRIBERS = {
    # name: (query, which audiences of audience_of reach it)
    "plain": ({}, {0}),
    "topic": ({"topic": "room"}, {0, 1}),
    "token": ({"token": "alice"}, {0, 2}),
    "token+topic": ({"token": "bob", "topic": "room"}, {0, 1, 3}),
}


def push_body(channel: str, index: int) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": channel, "payload": index}
    audience = audience_of(index)
    if audience is not None:
        body["audience"] = audience
    return body


def test_dropped_clients_resume_exactly_once_in_order_while_pushes_go_on(faults: Service) -> None:
    channel = unique("resume")
    drop_after = 50  # every subscriber drops after its 50th message, among the first 400 pushed
    opened = threading.Barrier(len(SUBSCRIBERS) + 1, timeout=20)
    all_dropped = threading.Barrier(len(SUBSCRIBERS) + 1, timeout=60)
    reconnect = threading.Event()

    def subscribe(name: str) -> list[tuple[str, int]]:
        params, reaches = SUBSCRIBERS[name]
        query = {"channel": channel, **params}
        received: list[tuple[str, int]] = []
        with SSEStream(faults.base, query) as stream:
            assert stream.status == 200
            opened.wait()
            while len(received) < drop_after:
                event = stream.next_event(timeout=20)
                received.append((event.id, json.loads(event.data)["payload"]))
        # The socket is gone: whatever else was already on its way is lost with it.
        all_dropped.wait()
        assert reconnect.wait(60)
        expected = sum(1 for index in range(1, TOTAL + 1) if index % 4 in reaches)
        with SSEStream(faults.base, query, headers={"Last-Event-ID": received[-1][0]}) as stream:
            while len(received) < expected:
                event = stream.next_event(timeout=20)
                assert event.event == "message", event
                received.append((event.id, json.loads(event.data)["payload"]))
            stream.assert_silent(0.3)
        return received

    def publish() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {faults.secret}"

        def push(index: int) -> None:
            assert session.post(faults.base, json=push_body(channel, index), timeout=10).status_code == 200

        opened.wait()
        for index in range(1, 401):
            push(index)
        all_dropped.wait()  # nobody is connected for 401..700
        for index in range(401, 701):
            push(index)
        reconnect.set()  # 701..1000 race the reconnections and their replays
        for index in range(701, TOTAL + 1):
            push(index)

    with ThreadPoolExecutor(len(SUBSCRIBERS) + 1) as pool:
        futures = {name: pool.submit(subscribe, name) for name in SUBSCRIBERS}
        publisher = pool.submit(publish)
        publisher.result(timeout=100)
        results = {name: future.result(timeout=100) for name, future in futures.items()}

    for name, received in results.items():
        reaches = SUBSCRIBERS[name][1]
        assert [payload for _, payload in received] == [i for i in range(1, TOTAL + 1) if i % 4 in reaches], name
        keys = [tuple(int(part) for part in event_id.split("-")) for event_id, _ in received]
        assert keys == sorted(set(keys)), f"{name}: ids must increase"


def test_last_event_id_query_parameter_resumes_a_first_connection(faults: Service) -> None:
    channel = unique("query")
    ids = [faults.push({"channel": channel, "payload": index}).json()["id"] for index in range(20)]
    with SSEStream(faults.base, {"channel": channel, "lastEventId": ids[9]}) as stream:
        assert [m["payload"] for m in stream.messages(10)] == list(range(10, 20))
        faults.push({"channel": channel, "payload": "live"})
        assert stream.messages(1)[0]["payload"] == "live"
        stream.assert_silent(0.2)
        assert "gap" not in stream.decoder.comments


def test_last_event_id_header_wins_over_the_query_parameter(faults: Service) -> None:
    # EventSource reconnects to the same URL, still holding the first ?lastEventId, and adds
    # the header with the id it saw last: the header is the newer one.
    channel = unique("both")
    ids = [faults.push({"channel": channel, "payload": index}).json()["id"] for index in range(10)]
    params = {"channel": channel, "lastEventId": ids[2]}
    with SSEStream(faults.base, params, headers={"Last-Event-ID": ids[6]}) as stream:
        assert [m["payload"] for m in stream.messages(3)] == [7, 8, 9]
        stream.assert_silent(0.2)


def test_an_up_to_date_id_replays_nothing_and_sends_no_gap(faults: Service) -> None:
    channel = unique("current")
    last = faults.push({"channel": channel, "payload": 0}).json()["id"]
    with SSEStream(faults.base, {"channel": channel}, headers={"Last-Event-ID": last}) as stream:
        faults.push({"channel": channel, "payload": 1})
        event = stream.next_event()
        assert (event.event, json.loads(event.data)["payload"]) == ("message", 1)


def test_an_id_older_than_the_history_gives_gap_then_what_is_retained_then_live(faults: Service) -> None:
    channel = unique("evicted")
    first = faults.push([{"channel": channel, "payload": index} for index in range(20)]).json()["results"]
    faults.push([{"channel": channel, "payload": index} for index in range(20, 20 + TOTAL)])
    # History keeps the last 1,000 of the channel: 20..1019. The client last saw 4.
    with SSEStream(faults.base, {"channel": channel}, headers={"Last-Event-ID": first[4]["id"]}) as stream:
        gap = stream.next_event()
        assert gap.event == "gap"
        assert json.loads(gap.data) == {"lastEventId": first[4]["id"]}
        assert [m["payload"] for m in stream.messages(TOTAL)] == list(range(20, 20 + TOTAL))
        faults.push({"channel": channel, "payload": "live"})
        assert stream.messages(1)[0]["payload"] == "live"


@pytest.mark.parametrize(
    ("last_event_id", "expected"),
    [
        ("not-an-id", ["live"]),  # garbage: nothing to replay after it
        ("99999999999999-0", ["live"]),  # newer than any id issued: not ours
        # From before this server started (a previous process): what followed it is lost,
        # what is retained since is replayed.
        ("1000-0", ["before", "live"]),
    ],
)
def test_an_unusable_id_gives_gap_first(faults: Service, last_event_id: str, expected: list[str]) -> None:
    channel = unique("unknown")
    faults.push({"channel": channel, "payload": "before"})
    with SSEStream(faults.base, {"channel": channel}, headers={"Last-Event-ID": last_event_id}) as stream:
        faults.push({"channel": channel, "payload": "live"})
        gap = stream.next_event()
        assert gap.event == "gap"
        assert json.loads(gap.data) == {"lastEventId": last_event_id}
        assert [m["payload"] for m in stream.messages(len(expected))] == expected
        stream.assert_silent(0.2)


def test_an_empty_last_event_id_is_a_plain_connection(faults: Service) -> None:
    channel = unique("empty")
    faults.push({"channel": channel, "payload": "before"})
    with SSEStream(faults.base, {"channel": channel}, headers={"Last-Event-ID": ""}) as stream:
        faults.push({"channel": channel, "payload": "live"})
        event = stream.next_event()
        assert (event.event, json.loads(event.data)["payload"]) == ("message", "live")


def test_a_multi_channel_stream_resumes_across_its_channels_in_push_order(faults: Service) -> None:
    first, second, other = unique("a"), unique("b"), unique("c")
    params = [("channel", first), ("channel", second)]

    def push_range(start: int, stop: int) -> None:
        faults.push([{"channel": (first, second, other)[i % 3], "payload": i} for i in range(start, stop)])

    with SSEStream(faults.base, params) as stream:
        push_range(0, 300)
        events = stream.events(100)
        seen = [json.loads(e.data) for e in events]
        last_id = events[-1].id  # the client dies after its 100th event: later ones are lost
    assert [m["payload"] for m in seen] == [i for i in range(0, 150) if i % 3 != 2]
    assert {m["channel"] for m in seen} == {first, second}
    push_range(300, 450)  # missed while away
    with SSEStream(faults.base, params, headers={"Last-Event-ID": last_id}) as stream:
        push_range(450, 600)
        rest = [json.loads(e.data) for e in stream.events(300)]
        stream.assert_silent(0.2)
        assert stream.decoder.comments[:2] == [f"Connected to channel: {first}", f"Connected to channel: {second}"]
    assert [m["payload"] for m in rest] == [i for i in range(150, 600) if i % 3 != 2]
    assert all(m["channel"] == (first, second)[m["payload"] % 3] for m in rest)


def test_the_official_client_resumes_by_itself_after_the_server_ends_its_stream(faults: Service) -> None:
    channel = unique("js")
    with ResumingClient(faults.base, channel, 150) as client:
        assert client.next_line("open") == {"open": 1}
        faults.push([{"channel": channel, "payload": index} for index in range(1, 51)])
        client.wait_received(50)
        closed = requests.post(faults.server.url + "/test/close-streams", params={"retry": "300"}, timeout=10)
        assert closed.json()["closed"] >= 1
        faults.push([{"channel": channel, "payload": index} for index in range(51, 101)])
        assert client.next_line("open") == {"open": 2}  # EventSource came back by itself, with Last-Event-ID
        faults.push([{"channel": channel, "payload": index} for index in range(101, 151)])
        client.next_line("done")
        assert client.process.wait(timeout=10) == 0
    assert client.received == list(range(1, 151))
