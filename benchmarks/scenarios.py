"""The scenarios: each runs against one broker, started fresh, and checks its own answer.

A scenario returns its figures and a list of errors; any lost, duplicated or refused
message is an error, and a scenario with errors fails whatever its speed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter, sleep
from typing import Any

from . import servers
from .loadgen import Driver, LoadError, RunResult, Stream

SECRET = "bench-secret"
HOST = "127.0.0.1"
#: Padding that brings a message frame to about 180 bytes, a typical small update.
PAD = "x" * 96
PUBLISHERS = 4  # concurrent keep-alive publisher connections in burst runs

BrokerFactory = Callable[[], servers.Server]


@dataclass
class Outcome:
    """One scenario case against one broker."""

    metrics: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and self.skipped is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "skipped": self.skipped, "errors": self.errors[:20], "metrics": self.metrics}


def channel_name(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


def push_body(channel: str, batch: int = 1) -> Callable[[int], bytes]:
    """The i-th push (or batch of ``batch`` pushes): seq numbers and the send time in the payload."""
    prefix = f'{{"channel":"{channel}","payload":{{"seq":'.encode()
    suffix = f',"pad":"{PAD}"}}}}'.encode()

    if batch == 1:
        return lambda i: b'%s%d,"t":%.6f%s' % (prefix, i, perf_counter(), suffix)

    def body(i: int) -> bytes:
        now = perf_counter()
        first = i * batch
        return b"[" + b",".join(b'%s%d,"t":%.6f%s' % (prefix, first + k, now, suffix) for k in range(batch)) + b"]"

    return body


def offset(body: Callable[[int], bytes], start: int) -> Callable[[int], bytes]:
    return lambda i: body(i + start)


@contextmanager
def running(factory: BrokerFactory, keep_times: bool = False) -> Iterator[tuple[servers.Server, Driver]]:
    """A fresh broker and a driver on it; both stopped at the end, on failure too."""
    server = factory()
    driver = Driver(HOST, server.port, SECRET, keep_times=keep_times)
    try:
        yield server, driver
    finally:
        driver.close()
        server.stop()


def check_run(result: RunResult, outcome: Outcome, *, expect_sent: int | None) -> None:
    """The publisher side: every push answered 200, and the broker's ``sent`` count."""
    if not result.complete:
        outcome.errors.append(
            f"incomplete after the deadline: {result.frames} frames, {sum(result.statuses.values())} answers"
        )
    bad = {status: count for status, count in result.statuses.items() if status != 200}
    if bad:
        outcome.errors.append(f"push answers other than 200: {bad}")
    if expect_sent is not None and result.sent_total != expect_sent:
        outcome.errors.append(f"broker answered sent={result.sent_total} in total, expected {expect_sent}")


def check_streams(streams: list[Stream], expected: range, outcome: Outcome, driver: Driver) -> None:
    """Every stream received every seq in ``expected`` exactly once: nothing lost, nothing twice."""
    if driver.lost:
        outcome.errors.append(f"{len(driver.lost)} streams ended early: {Counter(driver.lost).most_common(3)}")
    wanted = list(expected)
    bad = 0
    for stream in streams:
        got = stream.seqs()
        if len(got) == len(wanted) and sorted(got) == wanted:
            continue
        bad += 1
        if bad <= 3:
            counts = Counter(got)
            lost = len(set(wanted) - counts.keys())
            twice = sum(1 for count in counts.values() if count > 1)
            outcome.errors.append(f"a stream got {len(got)} of {len(wanted)} messages: {lost} lost, {twice} twice")
    if bad > 3:
        outcome.errors.append(f"... {bad} streams in all got a wrong set of messages")


def window(server: servers.Server) -> Callable[[], float]:
    """The ``snapshot`` of a timed run: the broker's CPU counter, and with ``--profile`` the
    py-spy recording, started at the first call and stopped at the second."""
    calls = 0

    def snapshot() -> float:
        nonlocal calls
        calls += 1
        if server.recorder is not None:
            if calls == 1:
                server.recorder.start(server)
            else:
                server.recorder.stop()
        return server.cpu_seconds()

    return snapshot


def cpu_of(result: RunResult) -> float:
    before, after = result.snapshots
    return float(after - before)


def generator_figures(result: RunResult) -> dict[str, float]:
    """The generator's own CPU, so that a reader can tell whether it was the bottleneck."""
    return {
        "generator_cpu_s": round(result.generator_cpu, 3),
        "generator_cpu_share": round(result.generator_cpu / result.elapsed, 3) if result.elapsed else 0.0,
    }


# -- idle ------------------------------------------------------------------------------------
def idle(factory: BrokerFactory, streams: int) -> Outcome:
    """``streams`` streams held open: resident memory per stream, then one broadcast to all."""
    outcome = Outcome()
    with running(factory) as (server, driver):
        # Warm up: the first streams and push load code and fill caches that are not per stream.
        warm = driver.open_streams(20, f"channel={channel_name('warm')}", timeout=30)
        driver.close_streams(warm)
        driver.pump(1.0)
        rss_before = server.rss_bytes()
        channel = channel_name("idle")
        started = perf_counter()
        opened = driver.open_streams(streams, f"channel={channel}", timeout=300)
        connect_seconds = perf_counter() - started
        driver.pump(2.0)  # let both brokers settle: timers armed, buffers released
        rss_after = server.rss_bytes()
        driver.open_publishers(1)
        result = driver.run(pushes=1, body=push_body(channel), expect_frames=streams, timeout=120, linger=1.0)
        check_run(result, outcome, expect_sent=streams)
        check_streams(opened, range(1), outcome, driver)
        outcome.metrics = {
            "streams": streams,
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_after_mib": round(rss_after / 2**20, 1),
            "rss_per_stream_kib": round((rss_after - rss_before) / streams / 1024, 2),
            "connect_per_s": round(streams / connect_seconds),
            "broadcast_s": round(result.elapsed, 3),
        }
    return outcome


def subscribed_and_warm(
    driver: Driver, outcome: Outcome, kind: str, subscribers: int, publishers: int, warmup: int
) -> tuple[list[Stream], Callable[[int], bytes]]:
    """``subscribers`` streams on a fresh channel, ``publishers`` push connections, and
    ``warmup`` pushes delivered and checked before any timed window; returns the streams and
    the body of the timed pushes, numbered after the warm-up."""
    channel = channel_name(kind)
    streams = driver.open_streams(subscribers, f"channel={channel}", timeout=120)
    driver.open_publishers(publishers)
    body = push_body(channel)
    warm = driver.run(pushes=warmup, body=body, expect_frames=subscribers * warmup, timeout=60, linger=0.2)
    check_run(warm, outcome, expect_sent=subscribers * warmup)
    return streams, offset(body, warmup)


# -- fan-out ------------------------------------------------------------------------------
def fanout(factory: BrokerFactory, subscribers: int, pushes: int, warmup: int = 10) -> Outcome:
    """``pushes`` pushes in a burst to ``subscribers`` streams on one channel."""
    outcome = Outcome()
    with running(factory) as (server, driver):
        streams, body = subscribed_and_warm(driver, outcome, "fanout", subscribers, PUBLISHERS, warmup)
        deliveries = subscribers * pushes
        result = driver.run(
            pushes=pushes,
            body=body,
            expect_frames=deliveries,
            timeout=300,
            snapshot=window(server),
        )
        check_run(result, outcome, expect_sent=deliveries)
        check_streams(streams, range(warmup + pushes), outcome, driver)
        cpu = cpu_of(result)
        outcome.metrics = {
            "subscribers": subscribers,
            "pushes": pushes,
            "deliveries": deliveries,
            "elapsed_s": round(result.elapsed, 3),
            "deliveries_per_s": round(deliveries / result.elapsed),
            "server_cpu_s": round(cpu, 3),
            "cpu_us_per_delivery": round(cpu * 1e6 / deliveries, 3),
            **generator_figures(result),
        }
    return outcome


# -- latency ------------------------------------------------------------------------------
def latency(factory: BrokerFactory, subscribers: int, pushes: int, rate: float, warmup: int = 5) -> Outcome:
    """Pushes paced at ``rate`` per second to ``subscribers`` streams: push→receive times."""
    outcome = Outcome()
    with running(factory, keep_times=True) as (server, driver):
        streams, body = subscribed_and_warm(driver, outcome, "latency", subscribers, 1, warmup)
        deliveries = subscribers * pushes
        result = driver.run(
            pushes=pushes,
            body=body,
            expect_frames=deliveries,
            timeout=pushes / rate + 120,
            rate=rate,
            snapshot=window(server),
        )
        check_run(result, outcome, expect_sent=deliveries)
        check_streams(streams, range(warmup + pushes), outcome, driver)
        delays = sorted(
            received - sent for stream in streams for seq, sent, received in stream.arrivals() if seq >= warmup
        )
        cpu = cpu_of(result)
        outcome.metrics = {
            "subscribers": subscribers,
            "pushes": pushes,
            "rate_per_s": rate,
            "deliveries": deliveries,
            "p50_ms": round(percentile(delays, 0.50) * 1000, 3),
            "p99_ms": round(percentile(delays, 0.99) * 1000, 3),
            "max_ms": round(delays[-1] * 1000, 3) if delays else None,
            "server_cpu_s": round(cpu, 3),
            "cpu_us_per_delivery": round(cpu * 1e6 / deliveries, 3),
            **generator_figures(result),
        }
    return outcome


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(fraction * len(values)))]


# -- push ---------------------------------------------------------------------------------
def push(factory: BrokerFactory, subscribers: int, pushes: int, batch: int = 1, warmup: int = 200) -> Outcome:
    """POST throughput, warmed up, with ``subscribers`` streams; ``batch`` > 1 sends JSON
    arrays of that many pushes (flask-impulse only: the reference has no batch endpoint)."""
    outcome = Outcome()
    with running(factory) as (server, driver):
        channel = channel_name("push")
        streams = driver.open_streams(subscribers, f"channel={channel}", timeout=60) if subscribers else []
        driver.open_publishers(PUBLISHERS)
        body = push_body(channel, batch)
        warm = driver.run(pushes=warmup, body=body, expect_frames=subscribers * warmup * batch, timeout=120, linger=0.1)
        check_run(warm, outcome, expect_sent=subscribers * warmup * batch)
        messages = pushes * batch
        result = driver.run(
            pushes=pushes,
            body=offset(body, warmup),
            expect_frames=subscribers * messages,
            timeout=300,
            snapshot=window(server),
        )
        check_run(result, outcome, expect_sent=subscribers * messages)
        if streams:
            check_streams(streams, range((warmup + pushes) * batch), outcome, driver)
        cpu = cpu_of(result)
        outcome.metrics = {
            "subscribers": subscribers,
            "requests": pushes,
            "batch": batch,
            "messages": messages,
            "requests_per_s": round(pushes / result.elapsed),
            "messages_per_s": round(messages / result.elapsed),
            "server_cpu_s": round(cpu, 3),
            "cpu_us_per_request": round(cpu * 1e6 / pushes, 2),
            "cpu_us_per_message": round(cpu * 1e6 / messages, 2),
            **generator_figures(result),
        }
    return outcome


# -- cluster ------------------------------------------------------------------------------
def cluster_factory() -> tuple[BrokerFactory | None, Callable[[], None], str | None]:
    """flask-impulse with two workers and a Redis backplane, if this checkout has one.

    Returns the factory (None when skipped), a cleanup, and the reason for a skip.
    """
    try:
        redis = servers.redis()
    except (OSError, RuntimeError) as exc:
        return None, lambda: None, f"skipped: redis-server did not start ({exc})"
    url = f"redis://127.0.0.1:{redis.port}/0"
    if not servers.has_redis_backplane(url):
        redis.stop()
        return None, lambda: None, "skipped: no Redis backplane"

    def factory() -> servers.Server:
        server = servers.impulse(SECRET, workers=2, redis_url=url)
        server.companions.append(redis)
        return server

    return factory, redis.stop, None


def wait_quiet(seconds: float = 0.5) -> None:
    """A pause between brokers, so that one's sockets in TIME_WAIT do not weigh on the next."""
    sleep(seconds)


__all__ = ["LoadError", "Outcome", "cluster_factory", "fanout", "idle", "latency", "push"]
