"""History and registry bounds, in process: what the live resume tests rely on, at the edges
that are slow or impossible to reach over the wire (TTL expiry, forgotten channels, clocks)."""

from __future__ import annotations

import time

import pytest

from flask_impulse.broker import Broker, Draft, MemoryBackplane, Message
from flask_impulse.broker.history import MemoryHistory
from flask_impulse.broker.message import IdClock, format_id


def message(key: tuple[int, int], channel: str = "c", age: float = 0.0) -> Message:
    return Message.create(key, channel, b"{}", published_at=time.time() - age)


def test_replay_after_a_retained_id_is_exact_and_says_no_gap() -> None:
    history = MemoryHistory(size=3, ttl=60, started=(100, 0))
    for sequence in range(5):
        history.append(message((200, sequence)))
    replay = history.replay(["c"], (200, 2))
    assert [m.key for m in replay.messages] == [(200, 3), (200, 4)]
    assert not replay.gap


@pytest.mark.parametrize(
    ("after", "gap"),
    [
        ((200, 0), True),  # its successor (200, 1) was evicted
        ((200, 1), False),  # (200, 2) onwards are retained
        ((99, 0), True),  # from before this history began
        (None, True),  # not an id this service issues
    ],
)
def test_replay_reports_a_gap_when_messages_after_the_id_may_be_missing(
    after: tuple[int, int] | None, gap: bool
) -> None:
    history = MemoryHistory(size=3, ttl=60, started=(100, 0))
    for sequence in range(5):
        history.append(message((200, sequence)))
    assert history.replay(["c"], after).gap is gap


def test_expired_channels_are_forgotten_and_older_ids_still_read_as_gaps() -> None:
    history = MemoryHistory(size=10, ttl=60, started=(100, 0))
    for index in range(1000):
        history.append(message((200, index), channel=f"user-{index}", age=120))
    history.append(message((300, 0), channel="fresh"))
    history.expire()
    assert history.channels == 1
    assert len(history) == 1
    assert history._evicted == {}
    # The messages after (200, 5) on user-7 expired: a gap, though the channel is forgotten;
    # a channel that never had messages reports one too (conservative, never the reverse).
    assert history.replay(["user-7"], (200, 5)).gap
    assert history.replay(["never-used"], (200, 5)).gap
    assert not history.replay(["fresh"], (250, 0)).gap
    assert not history.replay(["never-used"], (300, 0)).gap


def test_a_channel_recreated_after_being_forgotten_still_reports_the_gap() -> None:
    history = MemoryHistory(size=10, ttl=60, started=(100, 0))
    history.append(message((200, 0), age=120))
    history.expire()
    history.append(message((300, 0)))
    replay = history.replay(["c"], (150, 0))
    assert replay.gap
    assert [m.key for m in replay.messages] == [(300, 0)]


def test_appends_sweep_expired_messages_without_any_replay() -> None:
    history = MemoryHistory(size=10, ttl=1, started=(100, 0))
    history.append(message((200, 0), channel="old", age=5))
    history._next_sweep = 0  # the sweep is due
    history.append(message((300, 0), channel="new"))
    assert history.channels == 1


def test_multi_channel_replay_is_in_id_order() -> None:
    history = MemoryHistory(size=10, ttl=60, started=(100, 0))
    for sequence in range(6):
        history.append(message((200, sequence), channel="ab"[sequence % 2]))
    replay = history.replay(["b", "a"], (200, 1))
    assert [m.key for m in replay.messages] == [(200, 2), (200, 3), (200, 4), (200, 5)]


def test_ids_increase_even_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = IdClock()
    monkeypatch.setattr(time, "time", lambda: 2000.0)
    first = clock.next()
    monkeypatch.setattr(time, "time", lambda: 1000.0)
    second = clock.next()
    assert second > first
    assert format_id(second) == "2000000-1"


def test_an_id_newer_than_any_issued_is_a_gap() -> None:
    backplane = MemoryBackplane(history_size=10, history_ttl=60)
    backplane.start(lambda m: 0)
    published = backplane.publish(Draft("c", b"{}", None, None))
    now_ms = int(published.id.split("-")[0])
    assert not backplane.replay(["c"], (now_ms, 0)).gap
    assert backplane.replay(["c"], (now_ms + 60_000, 0)).gap


def make_broker(**options: float) -> Broker:
    backplane = MemoryBackplane(history_size=10, history_ttl=60)
    settings = {"max_connections": 100, "queue_max_messages": 10, "queue_max_bytes": 10_000, **options}
    return Broker(backplane, token_hash_key=b"k" * 32, **settings)


def test_released_connections_leave_nothing_behind_in_the_registry() -> None:
    broker = make_broker()
    connections = [broker.open((f"ch-{index}", "shared"), None, None) for index in range(50)]
    assert broker.deliver(Message.create((1, 0), "shared", b"{}")) == 50
    for connection in connections:
        broker.release(connection)
        broker.release(connection)  # twice is harmless
    assert broker.connections == set()
    assert broker._channels == {}
    assert broker.deliver(Message.create((1, 1), "shared", b"{}")) == 0


def test_a_full_queue_closes_only_the_slow_connection() -> None:
    broker = make_broker(queue_max_messages=3)
    slow = broker.open(("c",), None, None)
    fast = broker.open(("c",), None, None)
    writer = fast.frames(b"", [], heartbeat_interval=5)
    next(writer)
    for sequence in range(5):
        broker.deliver(Message.create((1, sequence), "c", b"{}"))
        assert next(writer).startswith(b"id: 1-%d\n" % sequence)  # the fast one writes each at once
    assert slow.closing_reason == "slow consumer: its queue is full"
    assert slow.queued == 0  # its memory is released at once
    assert fast.closing_reason is None
    for connection in (slow, fast):
        broker.release(connection)  # what each stream does as it ends


def test_a_graceful_close_still_writes_what_was_queued_then_the_retry_hint() -> None:
    broker = make_broker()
    connection = broker.open(("c",), None, None)
    frames = connection.frames(b": hello\n\n", [], heartbeat_interval=5)
    assert next(frames) == b": hello\n\n"
    broker.deliver(Message.create((1, 0), "c", b'{"a":1}'))
    connection.close("draining", retry_ms=1500)
    assert next(frames) == b'id: 1-0\ndata: {"a":1}\n\nretry: 1500\n\n'
    assert list(frames) == []
    broker.release(connection)


def test_drain_closes_every_connection_within_the_window() -> None:
    broker = make_broker(drain_window=0.2)
    connections = [broker.open(("c",), None, None) for _ in range(20)]
    broker.drain().join(timeout=5)
    assert all(c.closing_reason == "service draining" for c in connections)
    assert broker.draining
    for connection in connections:
        broker.release(connection)


def test_the_byte_bound_evicts_the_oldest_messages_across_channels_and_reports_their_gaps() -> None:
    one = MemoryHistory(size=10, ttl=60, started=(100, 0))
    one.append(message((200, 0), channel="c-0"))
    cost = one.bytes  # one message on its own channel, as the bound counts it
    history = MemoryHistory(size=10, ttl=60, started=(100, 0), max_bytes=5 * cost)
    for index in range(8):
        history.append(message((200, index), channel=f"c-{index}"))
    assert history.bytes <= 5 * cost
    assert history.channels == len(history) == 5  # c-3 .. c-7, the newest
    assert history.replay(["c-0"], (199, 0)).gap  # its message was evicted
    assert history.replay(["c-7"], (200, 6)).messages[0].key == (200, 7)
    assert not history.replay(["c-7"], (200, 6)).gap


def test_messages_evicted_by_the_per_channel_count_free_their_bytes_and_their_order_entries() -> None:
    history = MemoryHistory(size=2, ttl=60, started=(100, 0), max_bytes=1 << 20)
    history.append(message((200, 0), channel="quiet"))
    for sequence in range(1, 5000):
        history.append(message((200, sequence), channel="busy"))
    assert len(history) == 3
    assert len(history._order) <= 2 * 3 + 1024  # stale entries are compacted away
    # The busy channel's churn did not push the quiet channel's message out.
    assert [m.key for m in history.replay(["quiet"], (199, 0)).messages] == [(200, 0)]
    assert [m.key for m in history.replay(["busy"], (200, 4997)).messages] == [(200, 4998), (200, 4999)]
    assert history.replay(["busy"], (200, 4996)).gap
    # Expiring everything leaves nothing counted.
    history._ttl = -1
    history.expire()
    assert (len(history), history.channels, history.bytes, len(history._order)) == (0, 0, 0, 0)


def test_a_replayed_message_is_the_message_that_was_pushed() -> None:
    history = MemoryHistory(size=10, ttl=60, started=(100, 0))
    pushed = Message.create((200, 0), "c", b'{"a":1}', topic="t", audience=frozenset({b"k"}))
    history.append(pushed)
    (replayed,) = history.replay(["c"], (199, 0)).messages
    # What a replay sends and filters by: the frame as pushed, and its key, topic and audience.
    fields = ("key", "topic", "audience", "frame")
    assert [getattr(replayed, name) for name in fields] == [getattr(pushed, name) for name in fields]
