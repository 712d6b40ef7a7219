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

The listener, its backoff, dedupe and catch-up, the epoch rule and the replay's gap rule are
every shared backplane's (``shared.py``); this module implements them on Redis: the scripts
(``ids.lua``, ``epoch.lua``, ``publish.lua``), the pub/sub subscription and one read of the history.

Tokens never reach Redis: audiences are keyed hashes, made by the broker before publishing;
so are idempotency keys. redis-py is imported on first use, not at construction, so that
building an app in a gunicorn master (the CLI does, to check the configuration) imports
neither redis nor ssl there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..errors import BackplaneUnavailable, ConfigurationError, OutcomeUnknown
from .backplane import Draft, Published
from .message import MessageKey, format_id
from .shared import BATCH, Incoming, Retained, SharedBackplane, encode_body, raw_key

if TYPE_CHECKING:
    import redis as redis_py

log = logging.getLogger("flask_impulse.redis")

INSTALL_HINT = "the Redis backplane needs redis-py: pip install flask-impulse[redis]"

#: Connect and command timeouts: a push fails fast rather than hang on an unreachable Redis.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
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


def _lua(name: str) -> str:
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


class RedisBackplane(SharedBackplane):
    """Cluster-wide ids, history and delivery through one Redis server.

    ``sent_timeout`` bounds how long a publisher waits for the delivery reports of the worker
    processes its message reached; with 0 it does not wait, and ``sent`` counts those processes.
    ``history_max_bytes`` bounds the history of all channels together, in Redis (0: no bound).
    """

    store = "Redis"
    log = log

    def __init__(
        self,
        url: str,
        *,
        history_size: int,
        history_ttl: float,
        history_max_bytes: int = 64 * 1024 * 1024,
        prefix: str = "impulse",
        sent_timeout: float = 0.5,
        max_connections: int = 50,
        retry_ms: int = 1000,
        idempotency_ttl: float = 600.0,
    ) -> None:
        check_redis_url(url)
        super().__init__(history_size=history_size, history_ttl=history_ttl, retry_ms=retry_ms)
        self.url = url
        self.keys = _Keys(prefix)
        # 0 means no bound, as in memory; the script takes a number, and 2**53 is Lua's largest exact one.
        self._history_max_bytes = history_max_bytes or 2**53
        self._sent_timeout = sent_timeout
        self._max_connections = max_connections
        self._idempotency_ttl_ms = int(idempotency_ttl * 1000)
        self._client_instance: redis_py.Redis | None = None
        self._script: Any = None
        self._epoch_script: Any = None

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
            # A blocking pool: a command finding every connection busy waits for one, up to
            # the command timeout, where redis-py's default pool (100) fails it at once.
            pool = redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self._max_connections,
                timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=COMMAND_TIMEOUT,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
                # CLIENT LIST then tells which host and worker holds each connection.
                client_name=f"flask-impulse/{socket.gethostname()}/{os.getpid()}",
            )
            self._client_instance = redis.Redis(connection_pool=pool)
            self._client_instance.auto_close_connection_pool = True
            self._script = self._client_instance.register_script(_lua("publish.lua"))
            self._epoch_script = self._client_instance.register_script(_lua("epoch.lua"))
        return self._client_instance

    def client(self) -> redis_py.Redis:
        """The pooled client, for the other keys an app keeps beside the backplane's (presence)."""
        return self._client

    def _backend_error(self) -> type[Exception]:
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
        except self._backend_error() as exc:
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
        except self._backend_error() as exc:
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
        except self._backend_error() as exc:
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
        except self._backend_error() as exc:
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
        except self._backend_error() as exc:
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
    def _read_history(self, after: MessageKey | None) -> Retained:
        """The epoch, the last id and the trimmed mark, with (unless ``after`` is None) the
        newest ``SCAN_LIMIT`` entries after ``after``, in one MULTI/EXEC."""
        pipe = self._client.pipeline(transaction=True)
        self._epoch_script(keys=[self.keys.last_id, self.keys.epoch], client=pipe)
        pipe.get(self.keys.trimmed)
        if after is not None:
            pipe.xrevrange(self.keys.history, min=f"({format_id(after)}", count=SCAN_LIMIT + 1)
        (epoch, last, now_ms), trimmed, *read = pipe.execute()
        entries = read[0] if read else []
        return Retained(
            epoch=raw_key(epoch),
            last=raw_key(last) if last else None,
            now_ms=now_ms,
            trimmed=raw_key(trimmed) if trimmed is not None else None,
            entries=[(entry_id, fields[b"c"].decode(), fields[b"m"]) for entry_id, fields in entries[:SCAN_LIMIT]],
            truncated=len(entries) > SCAN_LIMIT,
        )

    # -- subscribing -----------------------------------------------------------------------
    def _subscribe(self) -> Any:
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.keys.bus)
            self._await_confirmation(pubsub)
        except BaseException:
            self._unsubscribe(pubsub)
            raise
        return pubsub

    def _await_confirmation(self, pubsub: Any) -> None:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while time.monotonic() < deadline:
            reply = pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.001))
            if reply is not None and reply["type"] == "subscribe":
                return
        raise _import_redis().ConnectionError("Redis did not confirm the subscription")

    def _receive(self, subscription: Any, timeout: float) -> Any:
        return subscription.get_message(timeout=timeout)

    def _ping(self, subscription: Any) -> None:
        subscription.ping()

    def _unpack(self, item: Any) -> Incoming | None:
        if item["type"] != "message":
            return None
        try:
            raw_id, report, channel, body = item["data"].split(b"\n", 3)
            return raw_key(raw_id), report, channel.decode(), body
        except ValueError:
            log.error("ignoring a malformed message on %s", self.keys.bus)
            return None

    def _unsubscribe(self, subscription: Any) -> None:
        try:
            subscription.close()
        except Exception as exc:  # a broken socket may fail to close; the listener moves on
            log.debug("closing the subscription failed: %s", exc)

    def _report(self, reports: dict[bytes, list[tuple[MessageKey, int]]]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for report, counts in reports.items():
                pipe.rpush(report, *(b"%d-%d:%d" % (key[0], key[1], count) for key, count in counts))
                pipe.pexpire(report, REPORT_TTL_MS)
            pipe.execute()
        except self._backend_error() as exc:
            log.info("could not report deliveries (%s); their publishers count them as missing", exc)

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        super().close()
        if self._client_instance is not None:
            self._client_instance.close()
            self._client_instance = None
