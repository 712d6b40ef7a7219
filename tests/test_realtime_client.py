"""RealtimeClient, the Python subscriber, against live gunicorn + gevent servers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from flask_impulse import Channel, Event, MissedMessages, RealtimeClient, RealtimeClientError, ServerClient
from tests.conftest import SECRET, Service
from tests.support.proxy import TcpProxy
from tests.support.server import ROOT, LiveServer, free_port
from tests.support.streams import unique


class Recorder:
    """Collects what callbacks receive, from any thread; waits with a deadline."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 15) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.items):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"not reached before the deadline; got {self.items!r}"
                self._changed.wait(remaining)
            return list(self.items)

    def wait_count(self, count: int, timeout: float = 15) -> list[Any]:
        return self.wait_for(lambda items: len(items) >= count, timeout)


@pytest.fixture
def client(standalone: Service) -> Iterator[RealtimeClient]:
    with RealtimeClient(standalone.base, retry_delay=0.05) as realtime:
        yield realtime


@pytest.fixture
def pusher(standalone: Service) -> Iterator[ServerClient]:
    with ServerClient(standalone.base, token=SECRET) as server_client:
        yield server_client


def health(url: str) -> dict[str, Any]:
    return requests.get(url, timeout=5).json()  # type: ignore[no-any-return]


def test_subscriber_receives_messages_with_payload_channel_and_id(client: RealtimeClient, pusher: ServerClient) -> None:
    channel = unique("rc")
    received = Recorder()
    client.subscribe(channel, received)
    assert client.wait_until_connected(10)
    assert pusher.push(channel, {"text": "hi"}) == 1
    [event] = received.wait_count(1)
    assert isinstance(event, Event)
    assert (event.channel, event.payload, event.topic) == (channel, {"text": "hi"}, None)
    assert event.id


def test_subscriptions_with_one_token_and_topic_share_one_stream(
    standalone: Service, client: RealtimeClient, pusher: ServerClient
) -> None:
    channels = [unique("rc") for _ in range(5)]
    received = Recorder()
    for channel in channels:
        client.subscribe(channel, received, topic="room")
    assert client.wait_until_connected(10)
    for channel in channels:
        pusher.push(channel, channel, topic="room")
    events = received.wait_count(5)
    assert sorted(event.payload for event in events) == sorted(channels)
    assert all(event.topic == "room" for event in events)
    # The streams replaced while subscribing close within the switch grace period.
    deadline = time.monotonic() + 10
    while client.get_stats()["connections"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get_stats()["connections"] == 1
    assert client.get_stats()["channels"] == 5


def test_unsubscribe_stops_one_handler_and_unsubscribe_all_stops_the_channel(
    client: RealtimeClient, pusher: ServerClient
) -> None:
    channel, other = unique("rc"), unique("rc")
    first, second, kept = Recorder(), Recorder(), Recorder()
    unsubscribe_first = client.subscribe(channel, first)
    client.subscribe(channel, second)
    client.subscribe(other, kept)
    assert client.wait_until_connected(10)
    unsubscribe_first()
    unsubscribe_first()  # a second call is harmless
    pusher.push(channel, 1)
    second.wait_count(1)
    client.unsubscribe_all(channel)
    assert client.wait_until_connected(10)
    pusher.push(channel, 2)
    pusher.push(other, 3)
    kept.wait_count(1)
    assert [event.payload for event in second.items] == [1]
    assert first.items == []
    client.unsubscribe_all_channels()
    assert client.get_stats()["subscriptions"] == 0
    assert client.state == "disconnected"


def test_duplicate_copies_from_overlapping_streams_reach_a_handler_once(
    client: RealtimeClient, pusher: ServerClient
) -> None:
    channel = unique("rc")
    received = Recorder()
    client.subscribe(channel, received)
    assert client.wait_until_connected(10)
    client.subscribe(unique("rc"), lambda event: None)  # the stream is replaced: two overlap a moment
    assert client.wait_until_connected(10)
    sent = pusher.push(channel, "once")
    received.wait_count(1)
    time.sleep(0.3)
    assert sent >= 1
    assert [event.payload for event in received.items] == ["once"]


def test_stream_iterator_yields_events_and_ends_on_close(standalone: Service, pusher: ServerClient) -> None:
    channel = unique("rc")
    realtime = RealtimeClient(standalone.base)
    events = realtime.stream(channel, timeout=10)
    assert realtime.wait_until_connected(10)
    pusher.push(channel, "a")
    pusher.push(channel, "b")
    assert [next(events).payload, next(events).payload] == ["a", "b"]
    threading.Timer(0.2, realtime.close).start()
    assert list(events) == []


def test_stream_iterator_times_out_instead_of_hanging(client: RealtimeClient) -> None:
    with client.stream(unique("rc"), timeout=0.2) as events, pytest.raises(TimeoutError):
        next(events)


def test_typed_channel_builds_dataclass_payloads(client: RealtimeClient, pusher: ServerClient) -> None:
    from tests.typing_cases.chat_types import Point, Shape

    shapes = Channel(unique("rc"), Shape)
    received = Recorder()
    client.subscribe(shapes, received)
    assert client.wait_until_connected(10)
    pusher.push(shapes, Shape("triangle", [Point(0, 0), Point(1, 0), Point(0, 1)]))
    [event] = received.wait_count(1)
    assert event.payload == Shape("triangle", [Point(0, 0), Point(1, 0), Point(0, 1)])


def test_handler_errors_are_reported_and_later_messages_still_arrive(
    client: RealtimeClient, pusher: ServerClient
) -> None:
    channel = unique("rc")
    errors, received = Recorder(), Recorder()
    client.on_error(errors)

    def handler(event: Event[Any]) -> None:
        if event.payload == "boom":
            raise ValueError("handler failed")
        received(event)

    client.subscribe(channel, handler)
    assert client.wait_until_connected(10)
    pusher.push(channel, "boom")
    pusher.push(channel, "fine")
    assert [event.payload for event in received.wait_count(1)] == ["fine"]
    assert isinstance(errors.items[0], ValueError)


def test_refused_stream_is_a_final_error_without_retries(standalone: Service) -> None:
    errors, states = Recorder(), Recorder()
    with RealtimeClient(standalone.base, retry_delay=0.05) as realtime:
        realtime.on_error(errors)
        realtime.on_connection_state(states)
        realtime.subscribe("bad\x01channel", lambda event: None)
        [error] = errors.wait_count(1)
        states.wait_for(lambda items: items[-1:] == ["disconnected"])
    assert isinstance(error, RealtimeClientError)
    assert (error.status, error.final) == (400, True)


def test_retry_attempts_exhausted_is_reported_through_on_error() -> None:
    port = free_port()  # nothing listens there
    errors, states = Recorder(), Recorder()
    with RealtimeClient(f"http://127.0.0.1:{port}/", retry_attempts=2, retry_delay=0.02) as realtime:
        realtime.on_error(errors)
        realtime.on_connection_state(states)
        realtime.subscribe("anything", lambda event: None)
        errors.wait_for(lambda items: any(getattr(error, "final", False) for error in items))
        states.wait_for(lambda items: items[-1:] == ["disconnected"])
        assert realtime.get_stats()["reconnects"] == 2
    final = [error for error in errors.items if error.final]
    assert len(final) == 1
    assert "gave up after 2 reconnect attempts" in str(final[0])
    assert len([error for error in errors.items if not error.final]) == 3  # the first attempt and 2 retries
    assert states.items[0] == "connecting"


class LockCheckingClient(RealtimeClient):
    """Records every change of ``reconnects`` made without holding the client's lock."""

    unlocked_changes = 0

    @property  # type: ignore[override]
    def reconnects(self) -> int:
        return self._reconnect_count

    @reconnects.setter
    def reconnects(self, value: int) -> None:
        if value and not self._lock._is_owned():  # type: ignore[attr-defined]
            self.unlocked_changes += 1
        self._reconnect_count = value


def test_reconnects_are_counted_under_the_clients_lock() -> None:
    """The supervisor thread counts a reconnect while get_stats() may be reading it: the count
    changes under the client's lock, never beside it."""
    port = free_port()  # nothing listens there
    errors = Recorder()
    with LockCheckingClient(f"http://127.0.0.1:{port}/", retry_attempts=2, retry_delay=0.02) as realtime:
        realtime.on_error(errors)
        realtime.subscribe("anything", lambda event: None)
        errors.wait_for(lambda items: any(getattr(error, "final", False) for error in items))
        assert realtime.get_stats()["reconnects"] == 2
        assert realtime.unlocked_changes == 0


@pytest.mark.live
def test_states_go_connecting_connected_disconnected_connected_across_a_server_restart() -> None:
    port = free_port()
    channel = unique("rc")
    states, received, errors = Recorder(), Recorder(), Recorder()
    server = LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="rc-restart", port=port).start()
    try:
        realtime = RealtimeClient(server.url + "/", retry_attempts=50, retry_delay=0.05, max_retry_delay=0.3)
        with realtime:
            realtime.on_connection_state(states)
            realtime.on_error(errors)
            realtime.subscribe(channel, received)
            assert realtime.wait_until_connected(10)
            with ServerClient(server.url + "/", token=SECRET) as pusher:
                pusher.push(channel, "before restart")
            received.wait_count(1)
            server.stop()
            states.wait_for(lambda items: "disconnected" in items)
            server = LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="rc-restart", port=port).start()
            states.wait_for(lambda items: items.count("connected") >= 2)
            assert realtime.wait_until_connected(10)
            with ServerClient(server.url + "/", token=SECRET) as pusher:
                assert pusher.push(channel, "after restart") == 1
            assert [event.payload for event in received.wait_count(2)] == ["before restart", "after restart"]
            assert realtime.get_stats()["reconnects"] >= 1
            # In-memory history did not survive the restart: the resumed stream says so.
            errors.wait_for(lambda items: any(isinstance(error, MissedMessages) for error in items))
    finally:
        server.stop()
    compressed = [state for index, state in enumerate(states.items) if index == 0 or states.items[index - 1] != state]
    assert compressed[:2] == ["connecting", "connected"]
    assert compressed[2] == "disconnected"
    assert compressed[-1] == "disconnected"  # closed at the end
    assert compressed[-2] == "connected"


def test_resume_after_a_network_cut_loses_nothing_and_repeats_nothing(standalone: Service) -> None:
    channel = unique("rc")
    received = Recorder()
    with (
        TcpProxy(standalone.server.port) as proxy,
        RealtimeClient(proxy.url + "/", retry_attempts=100, retry_delay=0.05, max_retry_delay=0.2) as realtime,
        ServerClient(standalone.base, token=SECRET) as pusher,
    ):
        realtime.subscribe(channel, received)
        assert realtime.wait_until_connected(10)
        for number in range(5):
            pusher.push(channel, number)
        received.wait_count(5)
        proxy.hold(True)
        proxy.cut()
        deadline = time.monotonic() + 10
        while realtime.state == "connected" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert realtime.state != "connected"
        for number in range(5, 15):
            pusher.push(channel, number)  # published while the subscriber is away
        proxy.hold(False)
        assert realtime.wait_until_connected(15)
        for number in range(15, 20):
            pusher.push(channel, number)
        events = received.wait_count(20)
        time.sleep(0.2)
    assert [event.payload for event in received.items] == list(range(20))
    assert len({event.id for event in events}) == 20


def test_watchdog_reconnects_a_stream_that_goes_silent_and_resumes_from_the_last_id() -> None:
    """A fake server: answers the stream's headers and one message, then sends nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    requests_seen: list[bytes] = []
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set() and len(requests_seen) < 2:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)
            connection.settimeout(5)
            requests_seen.append(connection.recv(65536))
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
                b': Connected to channel: quiet\n\nid: 7-0\ndata: {"channel":"quiet","payload":1}\n\n'
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    errors, received = Recorder(), Recorder()
    try:
        with RealtimeClient(f"http://127.0.0.1:{port}/", heartbeat_interval=0.25, retry_delay=0.02) as realtime:
            realtime.on_error(errors)
            realtime.subscribe("quiet", received)
            errors.wait_count(1)
            thread.join(10)
    finally:
        stop.set()
        listener.close()
        for connection in held:
            connection.close()
    assert len(requests_seen) == 2
    assert b"last-event-id: 7-0" in requests_seen[1].lower()
    assert "two heartbeat intervals" in str(errors.items[0])
    assert [event.payload for event in received.items] == [1]  # the replayed copy is not repeated


def test_client_works_under_gevent_monkey_patching(standalone: Service) -> None:
    channel = unique("rc")
    script = f"""
from gevent import monkey; monkey.patch_all()
import json, gevent
from flask_impulse import RealtimeClient, ServerClient
got = []
with RealtimeClient({standalone.base!r}) as client:
    client.subscribe({channel!r}, lambda event: got.append(event.payload))
    assert client.wait_until_connected(10)
    ServerClient({standalone.base!r}, token={SECRET!r}).push({channel!r}, {{"n": 1}})
    with gevent.Timeout(10):
        while not got:
            gevent.sleep(0.02)
print(json.dumps(got))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [{"n": 1}]
