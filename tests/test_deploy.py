"""Deploys behind a real nginx configured like deploy/nginx.conf, with a real redis-server: a
push in flight when its worker or its instance gets SIGTERM is answered 200 and delivered, no
publisher sees a 502, and a restarted replica takes new streams within seconds."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from tests.support.fleet import record_figure, wait_until
from tests.support.nginx import Nginx
from tests.support.processes import all_connected, kill_hard, streams_per_worker, worker_pids
from tests.support.redis import RedisServer
from tests.support.resuming import ResumingStreams
from tests.support.server import LiveServer
from tests.support.streams import ManyStreams

SECRET = "deploy-secret"
AUTHORIZATION = {"Authorization": f"Bearer {SECRET}"}


def instance(redis: RedisServer, workers: int, name: str, port: int | None = None) -> LiveServer:
    env = {"REALTIME_SECRET": SECRET, "REDIS_URL": redis.url, "IMPULSE_REDIS_SENT_TIMEOUT": "2"}
    return LiveServer("wsgi:app", env=env, workers=workers, name=name, port=port)


@contextmanager
def cluster(redis: RedisServer, directory: Path, workers: tuple[int, ...]) -> Iterator[tuple[list[LiveServer], Nginx]]:
    instances: list[LiveServer] = []
    try:
        for number, count in enumerate(workers, start=1):
            instances.append(instance(redis, count, f"deploy{number}").start())
        with Nginx([f"127.0.0.1:{i.port}" for i in instances], directory) as nginx:
            yield instances, nginx
    finally:
        for started in instances:
            started.stop()


@dataclass
class SteadyPublisher:
    """Pushes 0, 1, 2... to ``channel`` over one keep-alive connection to ``url``, every 20 ms,
    until stopped; keeps every answer's status."""

    url: str
    channel: str
    statuses: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    answer = session.post(
                        self.url, json={"channel": self.channel, "payload": len(self.statuses)},
                        headers=AUTHORIZATION, timeout=10,
                    )  # fmt: skip
                except requests.RequestException as exc:
                    self.errors.append(exc)
                    return
                self.statuses.append(answer.status_code)
                if answer.status_code != 200:
                    return
                self._stop.wait(0.02)

    @contextmanager
    def running(self) -> Iterator[SteadyPublisher]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(30)

    @property
    def pushed(self) -> int:
        return len(self.statuses)

    @property
    def failed(self) -> bool:
        """It stopped on an error or a status other than 200."""
        return bool(self.errors) or any(status != 200 for status in self.statuses)


def worker_holding(server: LiveServer, client: socket.socket) -> int:
    """The worker whose socket is the other end of ``client`` (0 while none has accepted it)."""
    local = client.getsockname()
    for pid in worker_pids(server):
        for connection in psutil.Process(pid).net_connections(kind="tcp"):
            if connection.raddr and (connection.raddr.ip, connection.raddr.port) == local:
                return pid
    return 0


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length, read before ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_pushes_in_flight_when_their_worker_gets_sigterm_are_answered_and_delivered(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(redis_server, tmp_path / "nginx", (2, 1)) as (instances, nginx):
        steady, slow = f"steady-{uuid.uuid4().hex[:8]}", f"slow-{uuid.uuid4().hex[:8]}"
        with (
            ResumingStreams(nginx.url + "/", 20, {"channel": steady}) as steady_streams,
            ResumingStreams(nginx.url + "/", 5, {"channel": slow}) as slow_streams,
        ):
            steady_streams.connect_all()
            slow_streams.connect_all()
            # A first message, so that a slow-channel stream ended by the drain resumes from
            # its id (a stream that received nothing has no Last-Event-ID to resume from).
            answer = requests.post(
                nginx.url + "/", json={"channel": slow, "payload": "first"}, headers=AUTHORIZATION, timeout=10
            )
            assert answer.status_code == 200
            slow_streams.run_until(lambda: all(p == ["first"] for p in slow_streams.payloads()), 30)
            publisher = SteadyPublisher(nginx.url + "/", steady)
            with publisher.running():
                steady_streams.run_until(lambda: publisher.pushed >= 20, 30)
                # A push whose chunked body is still coming when its worker is told to leave.
                target = instances[0]
                push = socket.create_connection(("127.0.0.1", target.port), timeout=10)
                body = f'{{"channel": "{slow}", "payload": "slow"}}'.encode()
                head = (
                    f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SECRET}\r\n"
                    "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                push.sendall(head.encode() + b"%X\r\n%s\r\n" % (5, body[:5]))
                wait_until(lambda: worker_holding(target, push) != 0, 10, "a worker to accept the push")
                leaving = worker_holding(target, push)
                os.kill(leaving, signal.SIGTERM)
                pushed_at_sigterm = publisher.pushed
                for start in range(5, len(body), 10):  # the rest, over about a second
                    time.sleep(0.2)  # pacing a slow body, not waiting for anything
                    piece = body[start : start + 10]
                    push.sendall(b"%X\r\n%s\r\n" % (len(piece), piece))
                push.sendall(b"0\r\n\r\n")
                status, headers, answer = read_answer(push, 20)
                push.close()
                assert status == 200, answer
                assert b'"id"' in answer, answer
                assert headers.get("connection", "").lower() == "close"  # its worker's last answer
                wait_until(lambda: not psutil.pid_exists(leaving), 20, "the SIGTERMed worker to exit")
                # Keep publishing through the restart and a little beyond.
                steady_streams.run_until(lambda: publisher.pushed >= pushed_at_sigterm + 100, 60)
            assert not publisher.errors, publisher.errors
            assert set(publisher.statuses) == {200}, publisher.statuses
            expected = list(range(publisher.pushed))
            steady_streams.run_until(lambda: all(p == expected for p in steady_streams.payloads()), 60)
            slow_streams.run_until(lambda: all(p == ["first", "slow"] for p in slow_streams.payloads()), 30)
        assert '" 502 ' not in (nginx.prefix / "access.log").read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_instance_stopped_behind_nginx_fails_no_keep_alive_publisher(
    redis_server: RedisServer, tmp_path: Path, signum: signal.Signals
) -> None:
    with cluster(redis_server, tmp_path / "nginx", (2, 1)) as (instances, nginx):
        channel = f"leave-{uuid.uuid4().hex[:8]}"
        with ResumingStreams(nginx.url + "/", 20, {"channel": channel}) as streams:
            streams.connect_all()
            publishers = [SteadyPublisher(nginx.url + "/", channel) for _ in range(3)]
            with publishers[0].running(), publishers[1].running(), publishers[2].running():
                streams.run_until(lambda: min(p.pushed for p in publishers) >= 20, 30)
                leaving = instances[0]
                assert leaving.process is not None
                leaving.signal(signum)
                at_sigterm = max(p.pushed for p in publishers)
                streams.run_until(lambda: leaving.process is not None and leaving.process.poll() is not None, 30)
                streams.run_until(
                    lambda: min(p.pushed for p in publishers) >= at_sigterm + 50 or any(p.failed for p in publishers),
                    60,
                )
            for publisher in publishers:
                assert not publisher.errors, publisher.errors
                assert set(publisher.statuses) == {200}, publisher.statuses
            total = sum(p.pushed for p in publishers)
            # Three publishers interleave: each stream gets every push once, and each
            # publisher's own pushes in order.
            streams.run_until(lambda: all(len(p) == total for p in streams.payloads()), 60)
            for payloads in streams.payloads():
                assert sorted(payloads) == sorted(n for p in publishers for n in range(p.pushed))
        assert '" 502 ' not in (nginx.prefix / "access.log").read_text()


def test_a_restarted_replica_receives_new_streams_within_seconds(redis_server: RedisServer, tmp_path: Path) -> None:
    with cluster(redis_server, tmp_path / "nginx", (1, 1)) as (instances, nginx):
        channel = f"rejoin-{uuid.uuid4().hex[:8]}"
        down = instances[1]
        port = down.port
        kill_hard(down)
        down.stop()
        # Pushes flow through nginx as in production: nginx counts a replica it marked failed
        # as live again only when a request to it completes, which a stream never does.
        publisher = SteadyPublisher(nginx.url + "/", channel)
        with ExitStack() as stack, publisher.running():
            # Streams opened while it is down all go to the other replica.
            before = stack.enter_context(ManyStreams(nginx.url + "/", 40, {"channel": channel}))
            before.read_until(all_connected, timeout=30)
            restarted = instance(redis_server, 1, "deploy-restarted", port=port).start()
            instances[1] = restarted  # stopped by the cluster
            ready = time.monotonic()
            # New streams, one every 50 ms, until the restarted replica holds 10 of them.
            first_stream_after = None
            while (held := sum(streams_per_worker(restarted).values())) < 10:
                assert time.monotonic() - ready < 30, f"the restarted replica took {held} streams in 30 s"
                if held and first_stream_after is None:
                    first_stream_after = time.monotonic() - ready
                group = stack.enter_context(ManyStreams(nginx.url + "/", 1, {"channel": channel}))
                group.read_until(all_connected, timeout=30)
                time.sleep(0.05)  # pacing new clients, not waiting for anything
            ten_streams_after = time.monotonic() - ready
            # Its share of the next 40 new streams: least_conn sends them to the emptier replica.
            share = stack.enter_context(ManyStreams(nginx.url + "/", 40, {"channel": channel}))
            share.read_until(all_connected, timeout=30)
            taken = sum(streams_per_worker(restarted).values()) - held
        record_figure(
            "replica_rejoin",
            first_stream_after_s=round(first_stream_after or ten_streams_after, 2),
            ten_streams_after_s=round(ten_streams_after, 2),
            of_next_40=taken,
        )
        assert not publisher.errors, publisher.errors
        assert set(publisher.statuses) == {200}
        assert taken >= 30  # round robin would give it half; least_conn, all until it catches up


def test_a_push_with_an_idempotency_key_goes_through_nginx_like_any_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # nginx sends a push with the header through its @keyed_push location (which may resend
    # it): method, body, headers and answer must come through unchanged. A batch carries its
    # keys in its items, which nginx cannot read; the header on a batch is refused through it.
    with cluster(redis_server, tmp_path / "nginx", (1,)) as (_, nginx):
        channel = f"keyed-{uuid.uuid4().hex[:8]}"
        with ResumingStreams(nginx.url + "/", 3, {"channel": channel}) as streams:
            streams.connect_all()
            keyed_push = ({"channel": channel, "payload": 0}, {"Idempotency-Key": uuid.uuid4().hex})
            keyed_batch = ([{"channel": channel, "payload": 1, "idempotencyKey": uuid.uuid4().hex}], {})
            for body, key_header in (keyed_push, keyed_batch):
                answer = requests.post(nginx.url + "/", json=body, headers={**AUTHORIZATION, **key_header}, timeout=10)
                assert answer.status_code == 200, answer.text
                assert answer.json()["sent"] == 3
            header_on_batch = requests.post(
                nginx.url + "/",
                json=[{"channel": channel, "payload": 2}],
                headers={**AUTHORIZATION, "Idempotency-Key": uuid.uuid4().hex},
                timeout=10,
            )
            assert header_on_batch.status_code == 400, header_on_batch.text
            assert header_on_batch.json()["error"] == "Invalid idempotency key"
            refused = requests.post(
                nginx.url + "/", json={"channel": channel}, headers={"Idempotency-Key": "k"}, timeout=10
            )
            assert refused.status_code == 401, refused.text
            assert "error" in refused.json()
            streams.run_until(lambda: all(p == [0, 1] for p in streams.payloads()), 30)
        assert "@keyed_push" not in nginx.error_log()
