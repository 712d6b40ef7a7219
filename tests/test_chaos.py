"""The chaos suite (issue 10): faults under live traffic, and what every subscriber received.

Three instances (the first with two workers) and one redis-server behind a real nginx
configured from deploy/nginx.conf; 120 subscribers that reconnect with Last-Event-ID as
EventSource does (one selector loop); one publisher pushing numbered messages through
``ServerClient`` via nginx at a bounded rate. Each experiment breaks one thing while the
pushes flow, lets the cluster recover, and counts: pushes acknowledged, deliveries lost,
lost without a gap signal, duplicated and reordered, and every non-2xx answer. The promise
(a 2xx reaches every subscriber once and in order, or that subscriber gets ``event: gap``)
allows no unsignalled loss, no duplicate, no reordering, and no answer but the documented
503s, of which "nothing was published" must be true.

One cluster serves every experiment (each on a channel and subscribers of its own); each
fault ends with the cluster whole again. The table of figures is written to the pytest tmp
dir and printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.chaos import NOTHING_PUBLISHED, OUTCOME_UNKNOWN, Publisher, Refusal, Tally, count, table
from tests.support.cluster import Cluster, running_cluster
from tests.support.fleet import wait_until
from tests.support.processes import kill_hard
from tests.support.redis import RedisServer
from tests.support.resuming import ResumingStreams
from tests.support.secrets import PUSH_SECRET
from tests.support.streams import StreamTimeout

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.nginx]

SECRET = PUSH_SECRET  # the log check at the end of the run looks for it
SUBSCRIBERS = 120
#: Pushes per second: 6,000 deliveries a second through nginx, on 2 shared cores. Enough for
#: a push to be in flight at almost any moment a fault strikes.
RATE = 50.0
#: Pushes every subscriber has received before the fault: the cluster is steady.
WARM_UP = 25
#: Pushes acknowledged after the fault ended before the publisher stops: it has recovered.
AFTER = 50
#: Seconds Redis stays dead before its restart (the issue's runs: 2 to 6.5 s).
REDIS_DOWN = 2.0
INSTANCE_DOWN = 1.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    redis = RedisServer(tmp_path_factory.mktemp("chaos-redis"))
    try:
        redis.start()
        with running_cluster(
            redis, tmp_path_factory.mktemp("chaos-nginx"), (2, 1, 1), secret=SECRET, name="chaos"
        ) as cluster:
            yield cluster
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Tally]]:
    """Every experiment's tally; the table goes to the tmp dir and the terminal at the end."""
    tallies: list[Tally] = []
    yield tallies
    text = table(tallies)
    path = tmp_path_factory.mktemp("chaos-results") / "results.md"
    path.write_text(text)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\nchaos suite results ({path}):\n{text}")


def _settle(streams: ResumingStreams, done: Callable[[], bool], timeout: float) -> bool:
    """Read the streams until ``done()``; False at the deadline (the tally then says what is missing)."""
    try:
        streams.run_until(done, timeout)
    except StreamTimeout:
        return False
    return True


def run_experiment(cluster: Cluster, name: str, fault: Callable[[Publisher], None], results: list[Tally]) -> Tally:
    """Subscribe, push, run ``fault`` in a thread while the streams are read, recover, tally."""
    channel = f"chaos-{uuid.uuid4().hex[:8]}"
    problems: list[str] = []
    with ResumingStreams(cluster.nginx.url + "/", SUBSCRIBERS, {"channel": channel}) as streams:
        streams.connect_all(timeout=60)
        publisher = Publisher(cluster.nginx.url + "/", SECRET, channel, RATE).start()
        failures: list[BaseException] = []
        try:
            if not _settle(streams, lambda: all(len(s.payloads) >= WARM_UP for s in streams.streams), 30):
                problems.append(f"not every subscriber had {WARM_UP} pushes before the fault")

            def guarded() -> None:
                try:
                    fault(publisher)
                except BaseException as exc:  # reported by the test
                    failures.append(exc)

            injector = threading.Thread(target=guarded, daemon=True)
            injector.start()
            if not _settle(streams, lambda: not injector.is_alive(), 60):
                problems.append("the fault did not finish within 60 s")
            recovered_from = publisher.answered
            if not _settle(streams, lambda: bool(publisher.errors) or publisher.acked_from(recovered_from + AFTER), 30):
                problems.append(f"no push after #{recovered_from + AFTER} was acknowledged within 30 s")
        finally:
            publisher.stop()
        last = publisher.acked[-1] if publisher.acked else -1
        # Every subscriber has the last acknowledged push: whatever it lacks now is lost.
        if not _settle(streams, lambda: all(max(s.payloads, default=-1) >= last for s in streams.streams), 15):
            problems.append("some subscribers never received the last acknowledged push")
        problems += [f"fault: {exc!r}" for exc in failures] + [f"publisher: {exc!r}" for exc in publisher.errors]
        received = [(stream.payloads, stream.gaps) for stream in streams.streams]
        reconnects = sum(stream.connects - 1 for stream in streams.streams)
        tally = count(name, publisher.acked, publisher.refused, received, reconnects, problems)
    results.append(tally)
    return tally


def assert_promise_kept(tally: Tally) -> None:
    assert not tally.problems, tally.problems  # among them: the cluster did not recover
    assert tally.lost_without_gap == 0, f"{tally.lost_without_gap} of {tally.lost} lost deliveries had no gap signal"
    assert tally.duplicates == 0
    assert tally.reordered == 0
    assert tally.unexplained == [], tally.unexplained
    assert tally.refused_yet_delivered == 0, f'{tally.refused_yet_delivered} deliveries of "{NOTHING_PUBLISHED}"'


# -- the harness's own arithmetic, so that the experiments can fail --------------------------
def test_the_tally_counts_loss_gaps_duplicates_reordering_and_false_refusals() -> None:
    refused = [Refusal(5, 503, NOTHING_PUBLISHED, "nothing was published"), Refusal(6, 502, "Bad Gateway", None)]
    received = [
        ([0, 1, 2, 3, 4, 5, 7], []),  # 5 refused yet delivered; nothing acked is missing
        ([0, 1, 3, 4, 7], [2]),  # 2 lost, the gap came right where it belonged
        ([0, 1, 2, 4, 7], []),  # 3 lost, silently
        ([0, 2, 1, 3, 3, 4, 7], []),  # one reordered, one duplicate
        ([0, 1, 2, 3], [4]),  # 4 and 7 lost at the end, after a gap: signalled
        ([0, 1, 2, 4, 7], [4]),  # 3 lost; a gap only after 4 arrived still tells the client
    ]
    tally = count("unit", [0, 1, 2, 3, 4, 7], refused, received, reconnects=3)
    assert (tally.acked, tally.lost, tally.lost_without_gap) == (6, 5, 1)
    assert (tally.duplicates, tally.reordered, tally.refused_yet_delivered) == (1, 1, 1)
    assert tally.unexplained == [refused[1]]
    assert Refusal(9, 503, OUTCOME_UNKNOWN, None).explained
    assert tally.non_2xx() == "1 x 502 Bad Gateway, 1 x 503 Backplane unavailable"
    assert "| unit | 6 | 6 | 5 | 1 | 1 | 1 |" in table([tally])


# -- the experiments -----------------------------------------------------------------------
def test_sigkill_of_an_instance(cluster: Cluster, results: list[Tally]) -> None:
    victim = cluster.instances[1]

    def crash_and_restart(publisher: Publisher) -> None:
        kill_hard(victim)
        victim.stop()  # closes its log; the process is gone already
        time.sleep(INSTANCE_DOWN)
        victim.start()

    tally = run_experiment(cluster, "SIGKILL of an instance (1 worker)", crash_and_restart, results)
    assert tally.reconnects > 0  # its subscribers had to come back through another instance
    assert_promise_kept(tally)


def test_sigterm_of_an_instance(cluster: Cluster, results: list[Tally]) -> None:
    victim = cluster.instances[0]

    def drain_and_restart(publisher: Publisher) -> None:
        victim.signal(signal.SIGTERM)
        assert victim.process is not None
        victim.process.wait(30)
        victim.stop()
        victim.start()

    tally = run_experiment(cluster, "SIGTERM of an instance (2 workers)", drain_and_restart, results)
    assert tally.reconnects > 0  # the drain ended its streams
    assert_promise_kept(tally)


@pytest.mark.parametrize("seconds", [5, 7])
def test_sigstop_of_redis(cluster: Cluster, results: list[Tally], seconds: int) -> None:
    """5 s as the issue asks; 7 s outlasts the backplane's 5 s command timeout. The stall
    starts just after an acknowledged push, so the next one is sent into it."""

    def stall(publisher: Publisher) -> None:
        publisher.next_ack()
        cluster.redis.signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            cluster.redis.signal(signal.SIGCONT)

    assert_promise_kept(run_experiment(cluster, f"SIGSTOP of Redis, {seconds} s", stall, results))


def _restart_redis(cluster: Cluster, _publisher: Publisher) -> None:
    """At a random moment of the traffic, so that a push may be in flight."""
    cluster.redis.stop()  # SIGKILL
    time.sleep(REDIS_DOWN)
    cluster.redis.start()


@pytest.mark.parametrize("run", range(1, 6))
def test_sigkill_of_redis_restarted_empty(cluster: Cluster, results: list[Tally], run: int) -> None:
    assert not cluster.redis.appendonly
    name = f"SIGKILL of Redis, restarted empty ({run}/5)"
    assert_promise_kept(run_experiment(cluster, name, functools.partial(_restart_redis, cluster), results))


@pytest.fixture(scope="module")
def redis_with_aof(cluster: Cluster) -> RedisServer:
    """The cluster's Redis restarted with AOF on, once every worker has its subscription back."""
    redis = cluster.redis
    if not redis.appendonly:
        subscribed = len(redis.subscribers())
        redis.stop()
        redis.appendonly = True
        redis.start()
        wait_until(lambda: len(redis.subscribers()) >= subscribed, 30, "every worker to resubscribe", 0.1)
        client = redis.client()
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        finally:
            client.close()
    return redis


@pytest.mark.parametrize("run", range(1, 6))
def test_sigkill_of_redis_with_aof(
    cluster: Cluster, redis_with_aof: RedisServer, results: list[Tally], run: int
) -> None:
    name = f"SIGKILL of Redis, AOF on ({run}/5)"
    assert_promise_kept(run_experiment(cluster, name, functools.partial(_restart_redis, cluster), results))
