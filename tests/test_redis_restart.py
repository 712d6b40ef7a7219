"""What a 2xx from the Redis backplane promises through Redis failures: a restart is a gap, a
batch read before a broken subscription is delivered, a stalled Redis answers "Outcome
unknown", and an idempotency key publishes once across instances. (A Redis SIGKILL and empty
restart with streams open: test_redis.py's outage test.)"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from flask_impulse.broker import Draft
from flask_impulse.broker.message import Message, parse_id
from flask_impulse.broker.redis import RedisBackplane
from flask_impulse.broker.shared import encode_body
from tests.support.processes import all_connected
from tests.support.redis import RedisServer, own_backplane
from tests.support.server import LiveServer
from tests.support.streams import ManyStreams, SSEStream

pytestmark = [pytest.mark.live, pytest.mark.redis]

SECRET = "restart-secret"


def push(url: str, body: object, key: str | None = None, timeout: float = 30) -> requests.Response:
    headers = {"Authorization": f"Bearer {SECRET}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(url, json=body, headers=headers, timeout=timeout)


def draft(channel: str, payload: object, idempotency: bytes | None = None) -> Draft:
    data = json.dumps({"channel": channel, "payload": payload}, separators=(",", ":")).encode()
    return Draft(channel, data, None, None, idempotency)


def payloads(buffer: bytes) -> list[bytes]:
    return re.findall(rb'"payload":([^}]*)', buffer)


def service(redis_server: RedisServer, name: str, **env: str) -> LiveServer:
    return LiveServer(
        "wsgi:app",
        env={"REALTIME_SECRET": SECRET, "REDIS_URL": redis_server.url, "IMPULSE_REDIS_SENT_TIMEOUT": "5", **env},
        name=name,
    )


@pytest.fixture
def backplane(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[RedisBackplane]:
    with own_backplane(redis_server, f"restart-{request.node.name}", history_size=10) as plane:
        yield plane


# -- the listener ----------------------------------------------------------------------------
class _BreakingSubscription:
    """redis-py's pub/sub as a broken connection leaves it: the messages already read come
    out one by one, then the next read raises."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self._messages = messages

    def get_message(self, timeout: float) -> dict[str, Any]:
        if self._messages:
            return self._messages.pop(0)
        raise redis.ConnectionError("Connection closed by server.")


def test_a_batch_read_before_the_subscription_breaks_is_delivered_before_the_error(
    backplane: RedisBackplane,
) -> None:
    delivered: list[str] = []

    def deliver(message: Message) -> int:
        delivered.append(message.id)
        return 1

    backplane.start(deliver)
    ids = [f"{1_000 + n}-0" for n in range(5)]
    bus = [
        {"type": "message", "data": b"\n".join((i.encode(), b"", b"a", encode_body(draft("a", n))))}
        for n, i in enumerate(ids)
    ]
    with pytest.raises(redis.ConnectionError):
        backplane._pump(_BreakingSubscription(bus))
    assert delivered == ids


def test_streams_get_every_message_of_a_burst_once_when_their_subscription_is_killed(tmp_path: Path) -> None:
    """CLIENT KILL of the worker's subscription right after a burst: each stream gets the whole
    burst, in order, once (what the listener had read, then the rest from history)."""
    with (
        RedisServer(tmp_path / "redis") as redis_server,
        service(redis_server, "client-kill") as server,
        ManyStreams(server.url + "/", 20, {"channel": "burst"}) as streams,
    ):
        streams.read_until(all_connected, 30)  # a push before the streams subscribe reaches none
        assert push(server.url, {"channel": "burst", "payload": -1}).json()["sent"] == 20
        streams.read_until(lambda bufs: all(b.count(b'"payload":-1') for b in bufs.values()), 30)
        publisher = RedisBackplane(redis_server.url, history_size=1000, history_ttl=60, sent_timeout=0)
        killer = redis_server.client()
        try:
            publisher.publish_many([draft("burst", n) for n in range(300)])
            assert killer.client_kill_filter(_type="pubsub") >= 1
            publisher.publish(draft("burst", "after"))
        finally:
            killer.close()
            publisher.close()
        streams.read_until(lambda bufs: all(b'"payload":"after"' in b for b in bufs.values()), 30)
        expected = [b"-1", *(str(n).encode() for n in range(300)), b'"after"']
        for buffer in streams.buffers.values():
            assert payloads(buffer) == expected


# -- restarts and the epoch ------------------------------------------------------------------
def test_a_resume_from_before_a_redis_restart_is_a_gap_even_when_its_data_survived(
    backplane: RedisBackplane, redis_server: RedisServer
) -> None:
    """With AOF, a restarted Redis keeps the history but may have lost its last second: an id
    issued by the previous Redis process is a gap, though what survived is replayed."""
    first = backplane.publish(draft("a", 0)).id
    second = backplane.publish(draft("a", 1)).id
    assert not backplane.replay(["a"], parse_id(first)).gap
    # A restart that kept the data, as this Redis sees it: the epoch names another process.
    client = redis_server.client()
    try:
        epoch_key = backplane.keys.epoch
        _, epoch = client.get(epoch_key).split(b" ")  # type: ignore[union-attr]
        client.set(epoch_key, b"0" * 40 + b" " + epoch)
    finally:
        client.close()
    replay = backplane.replay(["a"], parse_id(first))
    assert replay.gap and [m.id for m in replay.messages] == [second]
    after = backplane.publish(draft("a", 2)).id  # issued by the process now serving
    assert not backplane.replay(["a"], parse_id(after)).gap


# -- outcome unknown and idempotency ---------------------------------------------------------
def test_a_push_while_redis_is_stopped_is_outcome_unknown_then_delivered_once_and_its_retry_a_duplicate(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis") as redis_server, service(redis_server, "sigstop") as server:
        with SSEStream(server.url + "/", {"channel": "stop"}) as stream:
            assert push(server.url, {"channel": "stop", "payload": "before"}).status_code == 200
            assert stream.messages(1) == [{"channel": "stop", "payload": "before"}]
            assert redis_server.process is not None
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            try:
                answer = push(server.url, {"channel": "stop", "payload": "stalled"}, key="stalled-1")
            finally:
                os.kill(redis_server.process.pid, signal.SIGCONT)
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["error"] == "Outcome unknown" and "same idempotency key" in body["details"]
            # Redis ran the script when it woke: the message was published after all.
            delivered = stream.next_event(30)
            assert json.loads(delivered.data) == {"channel": "stop", "payload": "stalled"}
            retry = push(server.url, {"channel": "stop", "payload": "stalled"}, key="stalled-1")
            assert retry.status_code == 200, retry.text
            assert retry.json()["duplicate"] is True and retry.json()["id"] == delivered.id
            push(server.url, {"channel": "stop", "payload": "after"})
            assert stream.messages(1) == [{"channel": "stop", "payload": "after"}]  # not "stalled" again
        assert "Traceback" not in server.log()


def test_one_idempotency_key_pushed_to_two_instances_is_delivered_once(tmp_path: Path) -> None:
    with (
        RedisServer(tmp_path / "redis") as redis_server,
        service(redis_server, "idem-a") as first,
        service(redis_server, "idem-b") as second,
    ):
        with (
            SSEStream(first.url + "/", {"channel": "once"}) as on_first,
            SSEStream(second.url + "/", {"channel": "once"}) as on_second,
        ):
            body = {"channel": "once", "payload": "hello"}
            answer = push(first.url, body, key="order-42")
            assert answer.status_code == 200 and "duplicate" not in answer.json()
            repeat = push(second.url, body, key="order-42")
            assert repeat.status_code == 200
            assert repeat.json() == {"id": answer.json()["id"], "sent": answer.json()["sent"], "duplicate": True}
            push(second.url, {"channel": "once", "payload": "next"})
            for stream in (on_first, on_second):
                assert [m["payload"] for m in stream.messages(2)] == ["hello", "next"]
        # The key is kept as a keyed hash, never in clear.
        client = redis_server.client()
        try:
            assert not [key for key in client.keys("*") if b"order-42" in key]
            assert len(client.keys("impulse:idem:*")) == 1
        finally:
            client.close()


def test_duplicates_in_one_batch_and_across_batches_answer_the_first_push(backplane: RedisBackplane) -> None:
    key, other = b"\x01" * 16, b"\x02" * 16
    results = backplane.publish_many([draft("a", 0, key), draft("a", 1, key), draft("a", 2, other)])
    assert [r.duplicate for r in results] == [False, True, False]
    assert results[1].id == results[0].id and results[1].sent == results[0].sent
    again = backplane.publish(draft("a", 0, key))
    assert again.duplicate and again.id == results[0].id
    replay = backplane.replay(["a"], (1, 0))
    assert [m.id for m in replay.messages] == [results[0].id, results[2].id]


# -- history bounded in total ------------------------------------------------------------------
def test_history_is_bounded_in_bytes_across_channels_and_an_evicted_resume_is_a_gap(
    redis_server: RedisServer,
) -> None:
    bound = 20_000
    plane = RedisBackplane(
        redis_server.url, history_size=10, history_ttl=3600, history_max_bytes=bound, prefix="bounded", sent_timeout=0
    )
    try:
        ids = [plane.publish(draft(f"user-{n}", "x" * 100)).id for n in range(1_000)]
        client = redis_server.client()
        try:
            retained = client.xrange("bounded:history")
            counted = int(client.get("bounded:history-bytes"))  # type: ignore[arg-type]
        finally:
            client.close()
        assert 0 < len(retained) < 1_000 and counted <= bound
        assert retained[-1][0].decode() == ids[-1]
        oldest = ids.index(retained[0][0].decode())
        evicted = plane.replay([f"user-{oldest - 1}"], parse_id(ids[oldest - 2]))
        assert evicted.gap and evicted.messages == []
        kept = plane.replay([f"user-{oldest + 1}"], parse_id(ids[oldest]))
        assert not kept.gap and [m.id for m in kept.messages] == [ids[oldest + 1]]
    finally:
        plane.close()
