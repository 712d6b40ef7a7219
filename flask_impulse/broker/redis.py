"""The Redis backplane: every worker of every replica shares one stream of messages and one history.

How a push travels (docs/scaling.md tells the whole story; docs/reliability.md what each Redis
setting guarantees):

1. The publishing process runs one Lua script. Atomically, it issues the id ("ms-seq", from
   Redis's clock and one cluster-wide last id, so ids increase across *all* channels), checks
   the push's idempotency key, appends the message to the history (one stream for every
   channel, bounded in bytes and age), and publishes it on one shared pub/sub channel.
   Delivery order is therefore id order, everywhere.
2. Each worker process holds exactly one pub/sub subscription, opened by the first stream it
   serves, and read by one listener greenlet. The listener builds each message's SSE frame
   once, hands it to the broker's in-memory fan-out, and reports how many local connections
   took it, so the publisher can answer a true ``{"sent": N}``.
3. If the subscription breaks, the listener resubscribes with backoff, then catches up on what
   it missed from the history. Streams stay open meanwhile, unless the history may not hold
   everything they missed: then they are ended with a retry hint, and resume with a gap event.
4. Redis restarts are seen through its ``run_id``: the scripts keep, in the epoch key, the
   first id issued by the Redis process now serving. Every id before it may have lost
   successors (history gone, or an acknowledged message that never reached a listener).

Tokens never reach Redis: audiences are keyed hashes, made by the broker before publishing;
so are idempotency keys. redis-py is imported on first use, not at construction, so that
building an app in a gunicorn master (the CLI does, to check the configuration) imports
neither redis nor ssl there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import socket
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..errors import BackplaneUnavailable, ConfigurationError, OutcomeUnknown
from .backplane import Backplane, Draft, Published
from .history import Replay
from .message import Message, MessageKey, format_id, parse_id

if TYPE_CHECKING:
    import redis as redis_py

    from .connection import Connection

log = logging.getLogger("flask_impulse.redis")

INSTALL_HINT = "the Redis backplane needs redis-py: pip install flask-impulse[redis]"

#: Seconds a stream opening before the process's first subscription waits for it; later
#: streams never wait (a listener that is resubscribing catches them up instead).
FIRST_SUBSCRIPTION_WAIT = 2.0
#: Silence on the subscription, in seconds, after which the listener pings Redis; no answer
#: within as long again means the connection is dead (a half-open socket never errors).
PING_AFTER = 5.0
#: Resubscription backoff, in seconds: doubles from the first value up to the second, jittered.
BACKOFF = (0.05, 2.0)
#: Connect and command timeouts: a push fails fast rather than hang on an unreachable Redis.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
#: Most pub/sub messages handled per wake-up: the batch shares one delivery report to Redis.
BATCH = 1000
#: Seconds a delivery report list lives in Redis if its publisher stopped waiting.
REPORT_TTL_MS = 30_000
#: Bytes of bookkeeping counted per retained message on top of its channel and body: about
#: what a stream entry costs in its listpack (measured in docs/reliability.md).
ENTRY_OVERHEAD = 32
#: Most history entries one resume or catch-up reads; more since the client's id is a gap
#: (the newest are replayed), so that one resume never reads the whole history.
SCAN_LIMIT = 10_000
#: Seconds between polls of a duplicate whose first push is still counting its deliveries.
DUPLICATE_POLL = 0.02


def _script(name: str) -> str:
    """A Lua script shipped beside this module, after the id and epoch functions it calls."""
    folder = resources.files(__package__)
    return folder.joinpath("ids.lua").read_text("utf-8") + folder.joinpath(name).read_text("utf-8")


def check_redis_url(url: str) -> None:
    """Refuse, at configuration time, a URL redis-py cannot use, or a missing redis-py."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(f"IMPULSE_REDIS_URL must start with redis://, rediss:// or unix://, not {url!r}")
    if importlib.util.find_spec("redis") is None:
        raise ConfigurationError(INSTALL_HINT)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # installed when configured, removed since: say how to fix it
        raise ConfigurationError(INSTALL_HINT) from exc
    return redis


class _Keys:
    """Every name the backplane uses in Redis, under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.last_id = f"{prefix}:last-id"
        self.epoch = f"{prefix}:epoch"  # "run_id first-id" of the Redis process now serving
        self.bus = f"{prefix}:bus"
        self.history = f"{prefix}:history"  # one stream for every channel
        self.trimmed = f"{prefix}:history-trimmed"  # the newest id that left the history
        self.history_bytes = f"{prefix}:history-bytes"

    def idempotency(self, digest: bytes) -> str:
        return f"{self.prefix}:idem:{digest.hex()}"

    def report(self) -> str:
        return f"{self.prefix}:sent:{uuid.uuid4().hex}"


def encode_body(draft: Draft) -> bytes:
    """What Redis stores and carries for a message, besides its id and channel.

    ``topic \\n audience \\n data``: channel and topic cannot hold a newline (control characters
    are refused) and compact JSON never does. The audience is ``*`` for everyone, or the hex
    keyed hashes of its tokens, comma-separated (empty: nobody).
    """
    topic = draft.topic.encode() if draft.topic is not None else b""
    audience = b"*" if draft.audience is None else b",".join(key.hex().encode() for key in draft.audience)
    return b"\n".join((topic, audience, draft.data))


def decode_message(key: MessageKey, channel: str, body: bytes) -> Message:
    topic, audience, data = body.split(b"\n", 2)
    return Message.create(
        key,
        channel,
        data,
        topic.decode() if topic else None,
        None if audience == b"*" else frozenset(bytes.fromhex(h.decode()) for h in audience.split(b",") if h),
        published_at=key[0] / 1000,
    )


class RedisBackplane(Backplane):
    """Cluster-wide ids, history and delivery through one Redis server.

    ``sent_timeout`` bounds how long a publisher waits for the delivery reports of the worker
    processes its message reached; with 0 it does not wait, and ``sent`` counts those processes.
    ``history_max_bytes`` bounds the history of all channels together, in Redis (0: no bound).
    """

    def __init__(
        self,
        url: str,
        *,
        history_size: int,
        history_ttl: float,
        history_max_bytes: int = 64 * 1024 * 1024,
        prefix: str = "impulse",
        sent_timeout: float = 0.5,
        retry_ms: int = 1000,
        idempotency_ttl: float = 600.0,
    ) -> None:
        check_redis_url(url)
        self.url = url
        self.keys = _Keys(prefix)
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl * 1000) if history_size > 0 else 0
        # 0 means no bound, as in memory; the script takes a number, and 2**53 is Lua's largest exact one.
        self._history_max_bytes = history_max_bytes or 2**53
        self._sent_timeout = sent_timeout
        self._retry_ms = retry_ms
        self._idempotency_ttl_ms = int(idempotency_ttl * 1000)
        self._client_instance: redis_py.Redis | None = None
        self._script: Any = None
        self._epoch_script: Any = None
        self._listener: Any = None  # gevent.Greenlet, once a local stream needs one
        self._first_subscription: Any = None  # gevent Event
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._delivered: MessageKey | None = None  # the newest message handed to local streams
        self._baseline: MessageKey | None = None  # the last id in Redis when first subscribed
        self._epoch: bytes | None = None  # the epoch of the Redis process last subscribed to
        self._caught_up: dict[bytes, int] = {}  # delivery counts of caught-up messages, for reports
        self.subscribed = False

    @property
    def _history_on(self) -> bool:
        return self._history_ttl_ms > 0

    # -- the connection to Redis ---------------------------------------------------------
    @property
    def _client(self) -> redis_py.Redis:
        if self._client_instance is None:
            redis = _import_redis()
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No retries: a push that fails must fail at once with 503, and re-sending a script
            # whose answer was lost could publish it twice. A pooled connection that Redis
            # closed meanwhile is replaced when it is taken from the pool.
            self._client_instance = redis.Redis.from_url(
                self.url,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=COMMAND_TIMEOUT,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
                # CLIENT LIST then tells which host and worker holds each connection.
                client_name=f"flask-impulse/{socket.gethostname()}/{os.getpid()}",
            )
            self._script = self._client_instance.register_script(_script("publish.lua"))
            self._epoch_script = self._client_instance.register_script(_script("epoch.lua"))
        return self._client_instance

    @staticmethod
    def _redis_error() -> type[Exception]:
        return _import_redis().RedisError  # type: ignore[no-any-return]

    # -- publishing ------------------------------------------------------------------------
    def publish(self, draft: Draft) -> Published:
        return self.publish_many([draft])[0]

    def publish_many(self, drafts: Sequence[Draft]) -> list[Published]:
        """Publish ``drafts`` all or none (one MULTI/EXEC), then gather the delivery counts.

        A failure before anything was sent (no connection to Redis) refuses the push with
        ``BackplaneUnavailable``; one after the script may have reached Redis (a timeout, a
        connection lost while waiting) is ``OutcomeUnknown``: it may have been published.
        """
        client = self._client
        report = self.keys.report() if self._sent_timeout > 0 else ""
        self._connect(client)
        try:
            if len(drafts) == 1:
                results = [self._run_script(client, drafts[0], report)]
            else:
                pipe = client.pipeline(transaction=True)
                for draft in drafts:
                    self._run_script(pipe, draft, report)
                results = pipe.execute()
        except self._redis_error() as exc:
            raise OutcomeUnknown(
                "Outcome unknown",
                f"Redis did not answer ({exc}); the push may have been published: retry with the "
                "same idempotency key, which publishes it at most once",
                headers={"Retry-After": "1"},
            ) from exc
        fresh = {result[0]: int(result[1]) for result in results if not int(result[2])}
        counts = self._gather_reports(report, fresh) if report else fresh
        self._record_counts(drafts, results, counts)
        return [self._answer(draft, result, counts) for draft, result in zip(drafts, results, strict=True)]

    def _connect(self, client: Any) -> None:
        """Take a live connection before sending: failing here, nothing was published."""
        try:
            pool = client.connection_pool
            pool.release(pool.get_connection())
        except self._redis_error() as exc:
            raise BackplaneUnavailable(
                "Backplane unavailable",
                f"Redis did not take the push ({exc}); nothing was published, retry later",
                headers={"Retry-After": "1"},
            ) from exc

    def _run_script(self, client: Any, draft: Draft, report: str) -> Any:
        keys = [
            self.keys.last_id,
            self.keys.epoch,
            self.keys.history,
            self.keys.trimmed,
            self.keys.history_bytes,
        ]
        if draft.idempotency is not None and self._idempotency_ttl_ms > 0:
            keys.append(self.keys.idempotency(draft.idempotency))
        args = [
            self._history_ttl_ms,
            self._history_max_bytes,
            self.keys.bus,
            report,
            draft.channel,
            encode_body(draft),
            self._idempotency_ttl_ms,
            ENTRY_OVERHEAD,
        ]
        return self._script(keys=keys, args=args, client=client)

    def _record_counts(self, drafts: Sequence[Draft], results: list[Any], counts: dict[bytes, int]) -> None:
        """Store each counted push's ``sent`` under its idempotency key, for its duplicates."""
        if not self._sent_timeout or self._idempotency_ttl_ms == 0:
            return  # without a wait, the script stored the count itself
        keyed = [
            (self.keys.idempotency(draft.idempotency), result[0])
            for draft, result in zip(drafts, results, strict=True)
            if draft.idempotency is not None and not int(result[2])
        ]
        if not keyed:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, message_id in keyed:
                pipe.set(key, message_id + b":%d" % counts[message_id], xx=True, keepttl=True)
            pipe.execute()
        except self._redis_error() as exc:
            log.warning("could not record delivery counts for idempotency keys (%s); duplicates answer 0", exc)

    def _answer(self, draft: Draft, result: Any, counts: dict[bytes, int]) -> Published:
        if not int(result[2]):
            return Published(result[0].decode(), counts[result[0]])
        first_id, _, sent = result[0].partition(b":")
        if sent:
            return Published(first_id.decode(), int(sent), duplicate=True)
        if first_id in counts:  # its first push is in this same batch
            return Published(first_id.decode(), counts[first_id], duplicate=True)
        assert draft.idempotency is not None  # only a keyed push can be a duplicate
        return Published(first_id.decode(), self._await_count(self.keys.idempotency(draft.idempotency)), duplicate=True)

    def _await_count(self, key: str) -> int:
        """The ``sent`` of a push still counting its deliveries: wait for it as long as that
        push itself waits, then answer 0 (``sent`` is a lower bound, as with a late report)."""
        deadline = time.monotonic() + self._sent_timeout + DUPLICATE_POLL
        try:
            while time.monotonic() < deadline:
                time.sleep(DUPLICATE_POLL)  # gevent-patched under gunicorn: yields
                stored: Any = self._client.get(key)
                if stored is None:
                    return 0  # expired meanwhile
                _, _, sent = stored.partition(b":")
                if sent:
                    return int(sent)
        except self._redis_error() as exc:
            log.info("could not read the first push's count (%s); the duplicate answers 0", exc)
        return 0

    def _gather_reports(self, report: str, receivers: dict[bytes, int]) -> dict[bytes, int]:
        """Sum what each worker process reports it delivered, until every process that got the
        messages has reported or ``sent_timeout`` has passed (then the sum is a lower bound).

        The message is published before this wait starts: a failure here never turns an
        accepted push into an error.
        """
        counts = dict.fromkeys(receivers, 0)
        missing = sum(receivers.values())
        deadline = time.monotonic() + self._sent_timeout
        client: Any = self._client  # redis-py's return types are unions of every protocol's
        try:
            while missing > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Block in slices shorter than the socket timeout, whatever the configured wait.
                popped = client.blpop([report], timeout=max(min(remaining, COMMAND_TIMEOUT - 1), 0.001))
                if popped is None:
                    continue
                missing -= self._count_report(popped[1], counts)
                if missing > 0:  # take every report already there in one round trip
                    for item in client.lpop(report, BATCH) or []:
                        missing -= self._count_report(item, counts)
            if missing > 0:
                log.info("sent: %d delivery reports missing after %.2fs", missing, self._sent_timeout)
        except self._redis_error() as exc:
            log.warning("sent: could not read delivery reports (%s)", exc)
        # Nothing to clean up: Redis drops a list once it is empty, and reports that come too
        # late expire with their list.
        return counts

    @staticmethod
    def _count_report(item: bytes, counts: dict[bytes, int]) -> int:
        message_id, _, count = item.rpartition(b":")
        if message_id not in counts:
            return 0
        counts[message_id] += int(count)
        return 1

    # -- history ---------------------------------------------------------------------------
    def replay(self, channels: Iterable[str], after: MessageKey | None) -> Replay:
        """Retained messages after ``after``, with gap detection equivalent to ``MemoryHistory``.

        A gap: ``after`` predates the Redis process now serving (see the epoch), a message
        after it left the history (by the total bound or age: any channel's, so a gap may be
        reported that was not one, never the reverse), a channel had more than its count since
        ``after``, or more than ``SCAN_LIMIT`` messages were published since. When Redis cannot
        be read, the stream still opens, with a gap event: the client learns it may have
        missed something.
        """
        if after is None or not self._history_on:
            return Replay([], gap=True)
        try:
            client = self._client
            pipe = client.pipeline(transaction=True)
            self._epoch_script(keys=[self.keys.last_id, self.keys.epoch], client=pipe)
            pipe.get(self.keys.trimmed)
            pipe.xrevrange(self.keys.history, min=f"({format_id(after)}", count=SCAN_LIMIT + 1)
            (epoch, last_id, now_ms), trimmed, entries = pipe.execute()
        except self._redis_error() as exc:
            log.warning("replay: Redis unavailable (%s); the stream opens with a gap event", exc)
            return Replay([], gap=True)
        # Newer than any id issued, as MemoryBackplane judges it: another service's, or forged.
        future = after > max(_key(last_id) if last_id else (0, 0), (now_ms, 0))
        gap = (
            future
            or after < _key(epoch)
            or (trimmed is not None and _key(trimmed) > after)
            or len(entries) > SCAN_LIMIT
        )
        cutoff_ms = now_ms - self._history_ttl_ms
        messages, lost = self._select(entries[:SCAN_LIMIT], set(channels), cutoff_ms, self._history_size)
        # The client has everything up to its id, which this process's listener may not have
        # delivered yet; never beyond the last id issued, so a foreign id cannot mute a stream.
        skip_through = min(after, _key(last_id)) if last_id else None
        return Replay(messages, gap or lost, skip_through)

    @staticmethod
    def _select(
        newest_first: list[Any], channels: set[str], cutoff_ms: int, per_channel: int
    ) -> tuple[list[Message], bool]:
        """The messages of ``channels`` among history entries, oldest first, each channel's
        newest ``per_channel`` only, past-TTL ones dropped; True if any was dropped."""
        kept: dict[str, int] = {}
        messages: list[Message] = []
        lost = False
        for entry_id, fields in newest_first:
            channel = fields[b"c"].decode()
            if channel not in channels:
                continue
            key = _key(entry_id)
            if key[0] < cutoff_ms or kept.get(channel, 0) >= per_channel:
                lost = True  # past its TTL (not yet trimmed), or beyond the channel's count
                continue
            kept[channel] = kept.get(channel, 0) + 1
            messages.append(decode_message(key, channel, fields[b"m"]))
        messages.reverse()
        return messages, lost

    # -- subscribing -----------------------------------------------------------------------
    def attach(self, connection: Connection) -> None:
        """A local stream opened: make sure this process is subscribed.

        The first stream starts the listener and waits (briefly) for the subscription, so that
        a push made right after the stream opened is not missed. The connection is remembered
        weakly: after a resubscription, the listener catches up the channels of live streams.
        """
        self._connections.add(connection)
        if self._listener is None:
            import gevent
            from gevent import monkey
            from gevent.event import Event

            if not monkey.is_module_patched("socket"):
                # An unpatched Redis socket would block the hub, and every stream with it.
                raise ConfigurationError(
                    "streams with the Redis backplane need gevent-patched sockets: "
                    "serve the app with gunicorn's gevent worker (-k gevent)"
                )

            self._first_subscription = Event()
            self._listener = gevent.spawn(self._listen)
        if not self._first_subscription.is_set():
            self._first_subscription.wait(FIRST_SUBSCRIPTION_WAIT)

    def _listen(self) -> None:
        """The listener greenlet: subscribe, catch up, pump; on any failure, back off and redo."""
        import gevent

        delay = BACKOFF[0]
        failing = False
        while True:
            pubsub = None
            try:
                pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.subscribe(self.keys.bus)
                self._await_confirmation(pubsub)
                self._catch_up()
                self.subscribed = True
                self._first_subscription.set()
                if failing:
                    log.warning("Redis subscription restored")
                failing, delay = False, BACKOFF[0]
                self._pump(pubsub)
            except self._redis_error() as exc:
                if not failing:
                    log.warning("Redis subscription lost (%s); resubscribing with backoff", exc)
                failing = True
            except Exception:
                log.exception("Redis listener failed; resubscribing")
                failing = True
            finally:
                self.subscribed = False
                if pubsub is not None:
                    _close_quietly(pubsub)
            gevent.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF[1])

    def _await_confirmation(self, pubsub: Any) -> None:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while time.monotonic() < deadline:
            reply = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.001))
            if reply is not None and reply["type"] == "subscribe":
                return
        raise _import_redis().ConnectionError("Redis did not confirm the subscription")

    def _pump(self, pubsub: Any) -> None:
        awaiting_pong = False
        while True:
            message = pubsub.get_message(timeout=PING_AFTER)
            if message is None:
                if awaiting_pong:
                    raise _import_redis().ConnectionError(f"Redis did not answer a ping within {PING_AFTER}s")
                pubsub.ping()
                awaiting_pong = True
                continue
            awaiting_pong = False
            batch = [message]
            try:
                while len(batch) < BATCH:
                    more = pubsub.get_message(timeout=0.0)
                    if more is None:
                        break
                    batch.append(more)
            finally:
                # redis-py hands over the last message a broken connection read, and raises
                # on the next call: what was read is delivered before the error resubscribes.
                self._handle(batch)

    def _handle(self, batch: list[dict[str, Any]]) -> None:
        """Deliver a batch of bus messages locally, then report the counts to their publishers."""
        reports: dict[bytes, list[bytes]] = {}
        for item in batch:
            if item["type"] != "message":
                continue
            try:
                raw_id, report, channel, body = item["data"].split(b"\n", 3)
                key = _key(raw_id)
            except ValueError:
                log.error("ignoring a malformed message on %s", self.keys.bus)
                continue
            if self._delivered is not None and key <= self._delivered:
                count = self._caught_up.pop(raw_id, 0)  # already delivered by a catch-up
            else:
                self._delivered = key
                count = self._deliver_safely(decode_message(key, channel.decode(), body))
            if report:
                reports.setdefault(report, []).append(raw_id + b":%d" % count)
        if reports:
            self._send_reports(reports)

    def _deliver_safely(self, message: Message) -> int:
        try:
            return self._deliver(message)
        except Exception:
            log.exception("local delivery of %s failed", message.id)
            return 0

    def _send_reports(self, reports: dict[bytes, list[bytes]]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for report, items in reports.items():
                pipe.rpush(report, *items)
                pipe.pexpire(report, REPORT_TTL_MS)
            pipe.execute()
        except self._redis_error() as exc:
            log.info("could not report deliveries (%s); their publishers count them as missing", exc)

    def _catch_up(self) -> None:
        """After a (re)subscription, deliver what the local streams missed while unsubscribed.

        Runs between the subscription's confirmation and the first message read from it, so
        that every message is either in the history read here or on the subscription (both,
        for some: ``_handle`` drops those). When the missed messages may not all be in
        history (some left it, or Redis restarted: its epoch changed, and what the previous
        process acknowledged may be lost), the local streams are closed with a retry hint:
        they resume by Last-Event-ID and get the gap event that the normal resume path sends.
        """
        pipe = self._client.pipeline(transaction=True)
        self._epoch_script(keys=[self.keys.last_id, self.keys.epoch], client=pipe)
        pipe.get(self.keys.trimmed)
        if self._baseline is None:
            (self._epoch, last, _), _ = pipe.execute()
            self._baseline = _key(last) if last else (0, 0)
            return
        after = self._delivered or self._baseline
        pipe.xrange(self.keys.history, min=f"({format_id(after)}", count=SCAN_LIMIT + 1)
        (epoch, _, _), trimmed, entries = pipe.execute()
        restarted, self._epoch = epoch != self._epoch, epoch
        self._caught_up.clear()
        channels = {channel for c in list(self._connections) for channel in c.channels}
        if restarted:
            reason = "Redis restarted: messages may have been lost"
        elif not self._history_on:
            reason = "messages may have been lost while resubscribing to Redis (history is off)"
        elif (trimmed is not None and _key(trimmed) > after) or len(entries) > SCAN_LIMIT:
            reason = "messages were lost while resubscribing to Redis"
        else:
            reason = ""
        if reason:
            if self._connections:
                log.warning("%s; closing %d local streams so that they resume", reason, len(self._connections))
            for connection in list(self._connections):
                connection.close(reason, self._retry_ms + random.randint(0, self._retry_ms))
            return
        # Everything still retained is delivered: the per-channel count and the TTL bound what
        # a resume replays, not what a live stream missed during a short disconnection.
        missed, _ = self._select(entries[::-1], channels, 0, len(entries))
        for message in missed:
            self._caught_up[message.id.encode()] = self._deliver_safely(message)
            self._delivered = message.key
        if missed:
            log.warning("caught up %d messages missed while resubscribing", len(missed))

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._listener is not None:
            self._listener.kill(block=False)
            self._listener = None
        if self._client_instance is not None:
            self._client_instance.close()
            self._client_instance = None


def _key(raw: bytes) -> MessageKey:
    key = parse_id(raw.decode())
    if key is None:
        raise ValueError(f"not a message id: {raw!r}")
    return key


def _close_quietly(pubsub: Any) -> None:
    try:
        pubsub.close()
    except Exception as exc:  # a broken socket may fail to close; the listener moves on
        log.debug("closing the subscription failed: %s", exc)
