"""The Redis backplane on one host: several workers sharing one redis-server, the write-only
publisher, a Redis outage, and the configuration checks. (Replicas behind nginx: test_cluster.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flask_impulse.broker import Draft
from flask_impulse.broker.history import Replay
from flask_impulse.broker.message import parse_id
from flask_impulse.broker.redis import RedisBackplane
from flask_impulse.errors import BackplaneUnavailable
from tests.support.processes import all_connected, streams_on_every_worker, streams_per_worker, worker_pids
from tests.support.redis import RedisServer, own_backplane
from tests.support.server import ROOT, LiveServer, free_port
from tests.support.streams import ManyStreams, SSEStream

pytestmark = [pytest.mark.live, pytest.mark.redis]

SECRET = "redis-secret"


def read_all(groups: list[ManyStreams], needle: bytes, count: int = 1, timeout: float = 30) -> None:
    for group in groups:
        group.read_until(lambda buffers: all(b.count(needle) >= count for b in buffers.values()), timeout)


def buffers(groups: list[ManyStreams]) -> list[bytes]:
    return [buffer for group in groups for buffer in group.buffers.values()]


def push(url: str, body: object, session: requests.Session | None = None) -> requests.Response:
    sender = session or requests
    return sender.post(url, json=body, headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)


@pytest.fixture(scope="module")
def embedded_two_workers(redis_server: RedisServer) -> Iterator[LiveServer]:
    """tests/apps/scaled.py (flask-impulse embedded, Redis backplane) on two gunicorn workers."""
    env = {"IMPULSE_REDIS_URL": redis_server.url}
    with LiveServer(
        "tests.apps.scaled:app", env=env, workers=2, health_path="/realtime/health", name="scaled"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def cli_two_workers(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The standalone service as the CLI runs it: `flask-impulse --workers 2 --redis-url URL`."""
    # A generous wait for delivery counts: the tests assert exact "sent" on a noisy machine.
    env = {"IMPULSE_REDIS_PREFIX": "cli", "IMPULSE_REDIS_SENT_TIMEOUT": "5"}
    server = LiveServer(name="cli-redis", env=env)
    server.command = lambda: [  # type: ignore[method-assign]
        sys.executable,
        "-m",
        "flask_impulse",
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--workers",
        "2",
        "--redis-url",
        redis_server.url,
        "--secret",
        SECRET,
    ]
    with server:
        yield server


def test_streams_on_two_workers_receive_every_push_whichever_worker_took_it(embedded_two_workers: LiveServer) -> None:
    server = embedded_two_workers
    with streams_on_every_worker(server, server.url + "/realtime", "spread") as groups:
        holders = streams_per_worker(server)
        total = sum(holders.values())
        publishers: set[int] = set()
        ids: list[str] = []
        # Each push on a new connection: gunicorn hands it to either worker. Bounded loop.
        for number in range(300):
            answer = requests.post(server.url + "/send", json={"channel": "spread", "payload": number}, timeout=10)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["sent"] == total, body  # every stream, on both workers, counted
            publishers.add(body["pid"])
            ids.append(body["id"])
            if len(publishers) == 2 and number >= 20:
                break
        assert publishers == set(holders)
        read_all(groups, b"\nid: ", len(ids))
        for buffer in buffers(groups):
            received = [line[4:].decode() for line in buffer.split(b"\n") if line.startswith(b"id: ")]
            assert received == ids


def test_each_worker_holds_exactly_one_redis_subscription_with_1000_streams_open(
    cli_two_workers: LiveServer, redis_server: RedisServer
) -> None:
    server = cli_two_workers
    with ManyStreams(server.url + "/", 1000, {"channel": "many"}, timeout=30) as streams:
        streams.read_until(all_connected, timeout=60)
        holders = streams_per_worker(server)
        assert sum(holders.values()) == 1000 and all(count > 0 for count in holders.values()), holders
        # Client names carry the worker's pid; this service's workers, and no one else, use
        # the "cli" prefix (another service shares this redis-server).
        owners = [int(entry["name"].rsplit("/", 1)[1]) for entry in redis_server.subscribers()]
        assert sorted(pid for pid in owners if pid in holders) == sorted(holders)
        client = redis_server.client()
        try:
            assert client.pubsub_numsub("cli:bus") == [(b"cli:bus", 2)]
        finally:
            client.close()
        answer = push(server.url, {"channel": "many", "payload": "all"})
        assert answer.json()["sent"] == 1000
        streams.read_until(lambda buffers: all(b'"payload":"all"' in b for b in buffers.values()), 30)


def test_a_script_without_gevent_publishes_through_redis_alone(
    cli_two_workers: LiveServer, redis_server: RedisServer
) -> None:
    """A Celery task or a cron script: impulse.push() with only a Redis URL, no web server."""
    script = f"""
import sys
from flask import Flask
from flask_impulse import Impulse
app = Flask("worker-task")
app.config.update(IMPULSE_REDIS_URL={redis_server.url!r}, IMPULSE_REDIS_PREFIX="cli", IMPULSE_SECRET={SECRET!r})
impulse = Impulse(app)
sent = impulse.push("tasks", {{"done": 42}}, tokens=["user-7"])
print(sent, "gevent.monkey" in sys.modules)
"""
    subscribers_before = len(redis_server.subscribers())
    with (
        SSEStream(server_url(cli_two_workers), {"channel": "tasks", "token": "user-7"}) as mine,
        SSEStream(server_url(cli_two_workers), {"channel": "tasks", "token": "user-8"}) as other,
    ):
        result = run_python(script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["1", "False"]
        assert mine.messages(1) == [{"channel": "tasks", "payload": {"done": 42}}]
        other.assert_silent(0.5)
    assert len(redis_server.subscribers()) == subscribers_before


def server_url(server: LiveServer) -> str:
    return server.url + "/"


def test_sent_is_a_lower_bound_when_a_worker_does_not_report_in_time(redis_server: RedisServer) -> None:
    env = {"REALTIME_SECRET": SECRET, "REDIS_URL": redis_server.url, "IMPULSE_REDIS_PREFIX": "frozen"}
    with (
        LiveServer("wsgi:app", env=env, workers=2, name="frozen") as server,
        streams_on_every_worker(server, server.url + "/", "frozen") as groups,
    ):
        holders = streams_per_worker(server)
        frozen, running = sorted(holders, key=holders.__getitem__, reverse=True)
        os.kill(frozen, signal.SIGSTOP)
        try:
            answer = push(server.url, {"channel": "frozen", "payload": "late"})
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert answer.status_code == 200
        assert answer.json()["sent"] == holders[running]  # the frozen worker did not report in time
        read_all(groups, b'"payload":"late"')  # ...but its streams get the message all the same


def test_tokens_never_reach_redis_in_clear(cli_two_workers: LiveServer, redis_server: RedisServer) -> None:
    token = "very-private-token-4242"
    with SSEStream(server_url(cli_two_workers), {"channel": "secret-room", "token": token}) as stream:
        answer = push(cli_two_workers.url, {"channel": "secret-room", "payload": 1, "audience": {"tokens": [token]}})
        assert answer.json()["sent"] == 1
        assert stream.messages(1) == [{"channel": "secret-room", "payload": 1}]
    client = redis_server.client()
    try:
        stored = [entry for entry in client.xrange("cli:history") if entry[1][b"c"] == b"secret-room"]
        assert stored and token.encode() not in repr(stored).encode()
        assert all(token.encode() not in (client.dump(key) or b"") for key in client.keys("*"))
    finally:
        client.close()


def test_resume_after_a_push_taken_by_another_worker(cli_two_workers: LiveServer) -> None:
    first = push(cli_two_workers.url, {"channel": "resume", "payload": 1}).json()["id"]
    for payload in (2, 3):
        push(cli_two_workers.url, {"channel": "resume", "payload": payload})
    with SSEStream(server_url(cli_two_workers), {"channel": "resume"}, headers={"Last-Event-ID": first}) as stream:
        assert [m["payload"] for m in stream.messages(2)] == [2, 3]
        push(cli_two_workers.url, {"channel": "resume", "payload": 4})
        assert stream.messages(1) == [{"channel": "resume", "payload": 4}]


def test_streams_resuming_at_once_wait_for_a_pooled_connection_rather_than_open_with_a_gap(
    redis_server: RedisServer,
) -> None:
    """After a deploy every stream of a worker resumes at once: far more replays than pooled
    connections. They queue for a connection; none may open with a needless gap."""
    env = {
        "REALTIME_SECRET": SECRET,
        "REDIS_URL": redis_server.url,
        "IMPULSE_REDIS_PREFIX": "pooled",
        "IMPULSE_REDIS_MAX_CONNECTIONS": "4",  # one of them is the worker's subscription
    }
    with LiveServer("wsgi:app", env=env, name="pooled") as server:
        first = push(server.url, {"channel": "pooled", "payload": 0}).json()["id"]
        push(server.url, {"channel": "pooled", "payload": 1})
        groups = [ManyStreams(server.url + "/", 100, {"channel": "pooled", "lastEventId": first}) for _ in range(3)]
        try:
            read_all(groups, b'"payload":1')
            assert all(b"event: gap" not in buffer for buffer in buffers(groups))
            assert "Too many connections" not in server.log()
        finally:
            for group in groups:
                group.close()


def test_redis_outage_refuses_pushes_keeps_streams_and_recovers(tmp_path: Path) -> None:
    """Redis stops for 5 s: pushes get 503 at once, streams keep their heartbeats, no worker
    dies; Redis returns with an empty dataset, and every stream is sent to resume, where it
    gets a gap event (what the lost Redis held may be gone) and every later push."""
    with RedisServer(tmp_path / "redis") as redis_server:
        env = {"REALTIME_SECRET": SECRET, "REDIS_URL": redis_server.url, "IMPULSE_HEARTBEAT_INTERVAL": "1"}
        with LiveServer("wsgi:app", env=env, workers=2, name="outage") as server:
            with streams_on_every_worker(server, server.url + "/", "outage", batch=50) as groups:
                _run_outage(server, redis_server, groups)
            assert "Traceback" not in server.log()


def _run_outage(server: LiveServer, redis_server: RedisServer, groups: list[ManyStreams]) -> None:
    holders = streams_per_worker(server)
    assert push(server.url, {"channel": "outage", "payload": "before"}).json()["sent"] == sum(holders.values())
    read_all(groups, b'"payload":"before"')
    beats = [{fd: buffer.count(b": heartbeat") for fd, buffer in group.buffers.items()} for group in groups]

    redis_server.stop()
    refused = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answer = push(server.url, {"channel": "outage", "payload": "lost?"})
        assert answer.status_code == 503
        body = answer.json()
        assert body["error"] == "Backplane unavailable" and "Redis" in body["details"]
        assert answer.headers["Retry-After"] == "1"
        refused += 1
        time.sleep(0.25)
    assert refused >= 5
    # Readiness says why the service cannot take pushes; a client resuming during the outage
    # still gets its stream, told it may have missed messages.
    not_ready = requests.get(server.url + "/health/ready", timeout=10)
    assert not_ready.status_code == 503 and "Redis" in not_ready.json()["details"]
    with SSEStream(server.url + "/", {"channel": "outage"}, headers={"Last-Event-ID": "1-0"}) as resumed:
        assert resumed.next_event(5).event == "gap"
    # Heartbeats kept flowing on every stream during the outage (one a second here).
    for group, floor in zip(groups, beats, strict=True):
        group.read_until(lambda bufs, f=floor: all(b.count(b": heartbeat") >= f[fd] + 3 for fd, b in bufs.items()), 30)
    assert set(worker_pids(server)) == set(holders)

    redis_server.start()
    after = [push(server.url, {"channel": "outage", "payload": n}) for n in range(3)]
    assert [answer.status_code for answer in after] == [200, 200, 200]
    # Redis came back empty: what it acknowledged before the crash may be lost, so every
    # stream is ended with a retry hint, and its resume by Last-Event-ID gets a gap event,
    # then what the new Redis holds, in order.
    for group in groups:
        group.read_until(lambda bufs: all(b.count(b"retry: ") >= 2 for b in bufs.values()), 30)
    for buffer in buffers(groups):
        assert re.findall(rb'"payload":([^}]*)', buffer)[0] == b'"before"'
        last_id = re.findall(rb"^id: (\S+)", buffer, re.MULTILINE)[-1].decode()
        with SSEStream(server.url + "/", {"channel": "outage"}, headers={"Last-Event-ID": last_id}) as resumed:
            assert resumed.next_event(10).event == "gap"
            delivered = re.findall(rb'"payload":([^}]*)', buffer)[1:]
            rest = [m["payload"] for m in resumed.messages(3 - len(delivered))]
            assert [int(p) for p in delivered] + rest == [0, 1, 2]
    assert set(worker_pids(server)) == set(holders)
    assert requests.get(server.url + "/health/ready", timeout=10).json()["status"] == "ready"


# -- configuration --------------------------------------------------------------------------
def run_python(code: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("IMPULSE_", "REDIS_", "REALTIME_"))}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=30
    )


def test_missing_redis_package_says_how_to_install_it() -> None:
    result = run_python(
        "import sys; sys.modules['redis'] = None\n"
        "from flask import Flask\nfrom flask_impulse import Impulse, ConfigurationError\n"
        "app = Flask('x'); app.config.update(IMPULSE_REDIS_URL='redis://127.0.0.1:1/0', IMPULSE_SECRET='s')\n"
        "try:\n    Impulse(app)\nexcept ConfigurationError as exc:\n    print(exc)\n"
    )
    assert "pip install flask-impulse[redis]" in result.stdout, result.stderr


def test_redis_without_a_shared_token_hash_key_refuses_to_start() -> None:
    result = run_python(
        "from flask import Flask\nfrom flask_impulse import Impulse, ConfigurationError\n"
        "app = Flask('x'); app.config['IMPULSE_REDIS_URL'] = 'redis://127.0.0.1:1/0'\n"
        "try:\n    Impulse(app)\nexcept ConfigurationError as exc:\n    print(exc)\n"
    )
    assert "IMPULSE_TOKEN_HASH_KEY" in result.stdout, result.stderr


def test_cli_accepts_several_workers_with_redis_and_names_the_backplane(cli_two_workers: LiveServer) -> None:
    startup = [line for line in cli_two_workers.log().splitlines() if "listening on" in line]
    assert len(startup) == 1
    assert "backplane redis 127.0.0.1:" in startup[0] and "workers 2 x" in startup[0]


def test_redis_url_is_checked_before_forking() -> None:
    result = run_python(
        "import sys\nfrom flask_impulse.server.cli import main\n"
        "sys.exit(main(['--secret', 's', '--workers', '2', '--redis-url', 'localhost:6379']))"
    )
    assert result.returncode == 2
    assert "IMPULSE_REDIS_URL must start with redis://" in result.stderr
    assert "Traceback" not in result.stderr


# -- ids and history in Redis, through the backplane itself ---------------------------------
@pytest.fixture
def backplane(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[RedisBackplane]:
    """A backplane on its own key prefix, publishing without waiting for delivery reports."""
    with own_backplane(redis_server, f"unit-{request.node.name}", history_size=3) as plane:
        yield plane


def draft(channel: str, payload: object, topic: str | None = None, audience: frozenset[bytes] | None = None) -> Draft:
    return Draft(channel, json.dumps({"channel": channel, "payload": payload}).encode(), topic, audience)


def payloads(replay: Replay) -> list[object]:
    return [json.loads(message.frame.split(b"data: ", 1)[1])["payload"] for message in replay.messages]


def test_ids_increase_across_channels_and_batches(backplane: RedisBackplane) -> None:
    ids = [backplane.publish(draft(f"channel-{n % 3}", n)).id for n in range(20)]
    ids += [p.id for p in backplane.publish_many([draft("a", "x"), draft("b", "y")])]
    keys = [parse_id(i) for i in ids]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_replay_merges_channels_in_id_order_and_keeps_routing(backplane: RedisBackplane) -> None:
    first = backplane.publish(draft("a", 0)).id
    backplane.publish(draft("b", 1, topic="room"))
    backplane.publish(draft("a", 2, audience=frozenset({b"\x01" * 16})))
    replay = backplane.replay(["a", "b"], parse_id(first))
    assert payloads(replay) == [1, 2] and not replay.gap
    assert [(m.channel, m.topic, m.audience) for m in replay.messages] == [
        ("b", "room", None),
        ("a", None, frozenset({b"\x01" * 16})),
    ]


def test_replay_reports_a_gap_when_history_lost_messages(backplane: RedisBackplane) -> None:
    ids = [backplane.publish(draft("a", n)).id for n in range(5)]  # history keeps the last 3
    kept = backplane.replay(["a"], parse_id(ids[1]))
    assert payloads(kept) == [2, 3, 4] and not kept.gap
    lost = backplane.replay(["a"], parse_id(ids[0]))
    assert payloads(lost) == [2, 3, 4] and lost.gap
    before_this_redis = backplane.replay(["a"], (1, 0))
    assert before_this_redis.gap


def test_replay_reports_a_gap_once_messages_outlive_their_ttl(redis_server: RedisServer) -> None:
    plane = RedisBackplane(redis_server.url, history_size=10, history_ttl=0.2, prefix="unit-ttl", sent_timeout=0)
    try:
        start = plane.publish(draft("a", 0)).id
        plane.publish(draft("a", 1))
        time.sleep(0.3)
        replay = plane.replay(["a"], parse_id(start))
        assert replay.messages == [] and replay.gap
    finally:
        plane.close()


def test_an_id_from_the_future_gaps_but_does_not_mute_the_stream(backplane: RedisBackplane) -> None:
    last = parse_id(backplane.publish(draft("a", 0)).id)
    replay = backplane.replay(["a"], (9_999_999_999_999, 0))
    assert replay.messages == [] and replay.gap  # not an id we issued, as the in-memory backplane says
    assert replay.skip_through == last  # live messages after the last issued id still flow


def test_push_fails_fast_with_503_when_redis_is_unreachable() -> None:
    plane = RedisBackplane(f"redis://127.0.0.1:{free_port()}/0", history_size=3, history_ttl=60, sent_timeout=0)
    try:
        with pytest.raises(BackplaneUnavailable) as refused:
            plane.publish(draft("a", 0))
        assert refused.value.status == 503 and "Redis" in str(refused.value.details)
        assert plane.replay(["a"], (1, 0)).gap  # a resume during the outage says it may have missed some
    finally:
        plane.close()
