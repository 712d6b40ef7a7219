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
from .loadgen import Driver, LoadError, RunResult, StormResult, Stream, cpu_seconds_self

SECRET = "bench-secret-of-at-least-32-characters"  # the documented minimum length
HOST = servers.HOST
#: Padding that brings a message frame to about 180 bytes, a typical small update.
PAD = "x" * 96
PUBLISHERS = 4  # concurrent keep-alive publisher connections in fan-out bursts
#: Publisher connections in the push scenario, as issue 13 measured it: a backend's pool of
#: keep-alive connections, one request in flight on each.
PUSH_PUBLISHERS = 8
#: Publisher connections in the storm: enough that the pace holds while answers slow down.
STORM_PUBLISHERS = 4

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


def cpu_of(result: RunResult | StormResult) -> float:
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
    """``streams`` streams opened, as fast as the broker takes them (server CPU over the opening
    window only), then held open: resident memory per stream, then one broadcast to all."""
    outcome = Outcome()
    with running(factory) as (server, driver):
        # Warm up: the first streams and push load code and fill caches that are not per stream.
        warm = driver.open_streams(20, f"channel={channel_name('warm')}", timeout=30)
        driver.close_streams(warm)
        driver.pump(1.0)
        rss_before = server.rss_bytes()
        channel = channel_name("idle")
        snapshot = window(server)
        cpu_before = snapshot()
        generator_before = cpu_seconds_self()
        started = perf_counter()
        opened = driver.open_streams(streams, f"channel={channel}", timeout=300)
        connect_seconds = perf_counter() - started
        open_cpu = snapshot() - cpu_before
        generator_cpu = cpu_seconds_self() - generator_before
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
            "open_s": round(connect_seconds, 3),
            "cpu_us_per_stream_opened": round(open_cpu * 1e6 / streams, 1),
            "generator_cpu_share_opening": round(generator_cpu / connect_seconds, 3),
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
    """POST throughput, warmed up, with ``subscribers`` streams, over ``PUSH_PUBLISHERS``
    keep-alive connections: server CPU per request, requests per second, and each request's
    round trip (from its send to its whole answer read). ``batch`` > 1 sends JSON arrays of
    that many pushes (flask-impulse only: the reference has no batch endpoint)."""
    outcome = Outcome()
    with running(factory) as (server, driver):
        channel = channel_name("push")
        streams = driver.open_streams(subscribers, f"channel={channel}", timeout=60) if subscribers else []
        driver.open_publishers(PUSH_PUBLISHERS)
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
        round_trips = sorted(result.round_trips)
        outcome.metrics = {
            "subscribers": subscribers,
            "publishers": PUSH_PUBLISHERS,
            "requests": pushes,
            "batch": batch,
            "messages": messages,
            "requests_per_s": round(pushes / result.elapsed),
            "messages_per_s": round(messages / result.elapsed),
            "server_cpu_s": round(cpu, 3),
            "cpu_us_per_request": round(cpu * 1e6 / pushes, 2),
            "cpu_us_per_message": round(cpu * 1e6 / messages, 2),
            "round_trip_p50_ms": round(percentile(round_trips, 0.50) * 1000, 3),
            "round_trip_p99_ms": round(percentile(round_trips, 0.99) * 1000, 3),
            "round_trip_max_ms": round(round_trips[-1] * 1000, 3) if round_trips else None,
            **generator_figures(result),
        }
    return outcome


# -- reconnect storm ----------------------------------------------------------------------
def storm(
    factory: BrokerFactory,
    streams: int,
    channels: int = 10,
    rate: float = 20.0,
    warmup: int = 20,
    timeout: float = 180.0,
    drain: bool = False,
) -> Outcome:
    """``streams`` streams on ``channels`` channels, all dropped at once and reconnecting at
    once, each with the ``Last-Event-ID`` it last saw (none when the broker sends no ids),
    while a publisher pushes at ``rate`` per second, round robin over the channels, from
    before the drop until every stream is back and has received a message pushed after it.

    With ``drain``, the broker drops them instead: SIGHUP to gunicorn's master, whose old
    worker ends every stream with a ``retry:`` hint, and each stream reconnects after it
    (flask-impulse only, and with Redis, whose history outlives the worker).

    Every stream's two connections together must hold each message of its channel at most
    once. A broker that sent ids must also lose none (flask-impulse resumes from its
    history); one that sent none cannot resume, so what each stream missed is counted and
    reported, not failed.
    """
    outcome = Outcome()
    per_channel = streams // channels
    with running(factory) as (server, driver):
        warm = driver.open_streams(20, f"channel={channel_name('warm')}", timeout=30)
        driver.close_streams(warm)
        names = [channel_name(f"storm{index}") for index in range(channels)]
        opened = [
            stream for name in names for stream in driver.open_streams(per_channel, f"channel={name}", timeout=300)
        ]
        bodies = [push_body(name) for name in names]

        def body(seq: int) -> bytes:
            return bodies[seq % channels](seq)

        # Paced pushes before the drop, so that every stream has seen an id and both brokers run warm code.
        driver.open_publishers(STORM_PUBLISHERS)
        pre = driver.run(pushes=warmup, body=body, expect_frames=warmup * per_channel, rate=rate, timeout=60, linger=0)
        check_run(pre, outcome, expect_sent=warmup * per_channel)
        result = driver.storm(
            opened,
            lambda index, last_id: driver.stream_request(f"channel={names[index // per_channel]}", last_id),
            body=offset(body, warmup),
            first_seq=warmup,
            rate=rate,
            drop_after=1.0,
            timeout=timeout,
            snapshot=window(server),
            drop=server.reload if drain else None,
        )
        outcome.metrics = check_storm(opened, result, warmup, channels, outcome, driver)
        outcome.metrics["resumes"] = "yes" if any(b"\nid: " in stream.body() for stream in opened) else "no"
        if outcome.metrics["resumes"] == "yes" and outcome.metrics["missed_total"]:
            outcome.errors.append(
                f"{outcome.metrics['missed_total']} messages missed by {outcome.metrics['streams_missing']} "
                "streams, though the broker sends ids to resume from"
            )
        cpu = cpu_of(result) if result.snapshots[0] is not None else 0.0
        storm_seconds = (result.all_receiving_at or perf_counter()) - result.dropped_at
        outcome.metrics.update(
            {
                "rate_per_s": rate,
                "server_cpu_s": round(cpu, 3),
                "cpu_us_per_reconnect": round(cpu * 1e6 / streams, 1),
                "generator_cpu_s": round(result.generator_cpu, 3),
                "generator_cpu_share": round(result.generator_cpu / storm_seconds, 3),
            }
        )
    return outcome


def check_storm(
    dropped: list[Stream], result: StormResult, warmup: int, channels: int, outcome: Outcome, driver: Driver
) -> dict[str, Any]:
    """The storm's figures, and its errors: a stream not back, a duplicate, a refused push."""
    bad = {status: count for status, count in result.statuses.items() if status != 200}
    if bad:
        outcome.errors.append(f"push answers other than 200: {bad}")
    if driver.lost:
        outcome.errors.append(f"{len(driver.lost)} reopened streams ended early: {Counter(driver.lost).most_common(3)}")
    not_back = sum(1 for stream in result.reopened if stream is None)
    back = [stream for stream in result.reopened if stream is not None]
    not_receiving = sum(1 for stream in back if not stream.receiving_at)
    if not_back or not_receiving:
        outcome.errors.append(
            f"at the deadline, {not_back} streams were not back and {not_receiving} were back "
            "but had received no message pushed after the drop"
        )
    pushed = warmup + result.pushes
    missed: list[int] = []
    twice = gaps = 0
    per_stream = len(dropped) // channels
    for index, (old, new) in enumerate(zip(dropped, result.reopened, strict=True)):
        seqs = old.seqs() + (new.seqs() if new is not None else [])
        counts = Counter(seqs)
        channel = index // per_stream
        expected = set(range(channel, pushed, channels))
        missed.append(len(expected - counts.keys()))
        twice += sum(1 for count in counts.values() if count > 1) + len(counts.keys() - expected)
        gaps += new is not None and b"event: gap" in new.body()
    if twice:
        outcome.errors.append(f"{twice} messages received twice (or on the wrong channel)")
    receiving = sorted(stream.receiving_at - result.dropped_at for stream in back if stream.receiving_at)
    pushed_after = warmup + result.pushes - result.first_seq_after_drop
    storm_seconds = result.all_receiving_at - result.dropped_at
    return {
        "streams": len(dropped),
        "channels": channels,
        "all_back_s": round(result.all_back_at - result.dropped_at, 3) if result.all_back_at else None,
        "all_receiving_s": (round(result.all_receiving_at - result.dropped_at, 3) if result.all_receiving_at else None),
        "receiving_p50_s": round(percentile(receiving, 0.50), 3),
        "reconnects_per_s": round(len(back) / (result.all_back_at - result.dropped_at)) if result.all_back_at else None,
        "pushes_during_storm": pushed_after,
        "push_rate_during_storm": round(pushed_after / storm_seconds, 1) if result.all_receiving_at else None,
        "not_back": not_back,
        "retries": sum(result.retries.values()),
        "publisher_reconnects": result.publisher_reconnects,
        "pushes_sent_again": result.pushes_sent_again,
        "missed_total": sum(missed),
        "streams_missing": sum(1 for count in missed if count),
        "missed_per_stream_max": max(missed, default=0),
        "missed_per_stream_mean": round(sum(missed) / len(missed), 2) if missed else 0.0,
        "gap_events": gaps,
    }


# -- cluster ------------------------------------------------------------------------------
def cluster_factory(
    env: dict[str, str] | None = None, workers: int = 2
) -> tuple[BrokerFactory | None, Callable[[], None], str | None]:
    """flask-impulse with ``workers`` workers and a Redis backplane, if this checkout has one.

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
        server = servers.impulse(SECRET, workers=workers, redis_url=url, env=env)
        server.companions.append(redis)
        return server

    return factory, redis.stop, None


def wait_quiet(seconds: float = 0.5) -> None:
    """A pause between brokers, so that one's sockets in TIME_WAIT do not weigh on the next."""
    sleep(seconds)


__all__ = ["LoadError", "Outcome", "cluster_factory", "fanout", "idle", "latency", "push", "storm"]
