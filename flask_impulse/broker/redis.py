"""The Redis backplane: every worker of every replica shares one stream of messages and one history.

How a push travels (docs/scaling.md tells the whole story):

1. The publishing process runs one Lua script. Atomically, it issues the id ("ms-seq", from
   Redis's clock and one cluster-wide last id, so ids increase across *all* channels), appends
   the message to its channel's history stream (bounded by count and age), and publishes it on
   one shared pub/sub channel. Delivery order is therefore id order, everywhere.
2. Each worker process holds exactly one pub/sub subscription, opened by the first stream it
   serves, and read by one listener greenlet. The listener builds each message's SSE frame
   once, hands it to the broker's in-memory fan-out, and reports how many local connections
   took it, so the publisher can answer a true ``{"sent": N}``.
3. If the subscription breaks, the listener resubscribes with backoff, then catches up on what
   it missed from the history streams of its local channels. Streams stay open meanwhile.

Tokens never reach Redis: audiences are keyed hashes, made by the broker before publishing.
redis-py is imported on first use, not at construction, so that building an app in a gunicorn
master (the CLI does, to check the configuration) imports neither redis nor ssl there.
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
from typing import TYPE_CHECKING, Any

from ..errors import BackplaneUnavailable, ConfigurationError
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

# KEYS: last id, epoch, the channel's history stream, the channel's eviction mark.
# ARGV: history size, history TTL in ms, bus channel, report list (or ""), channel, body.
# The eviction mark holds the newest id that left the channel's history (by count or age):
# a resume from an older id has lost messages, and says so with a gap event.
_PUBLISH_SCRIPT = """
local function later(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, b_ms = tonumber(a_ms), tonumber(b_ms)
  return a_ms > b_ms or (a_ms == b_ms and tonumber(a_seq) > tonumber(b_seq))
end

local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = 0
local last = redis.call('GET', KEYS[1])
if last then
  local last_ms, last_seq = string.match(last, '^(%d+)-(%d+)$')
  last_ms = tonumber(last_ms)
  if last_ms >= ms then
    ms = last_ms
    seq = tonumber(last_seq) + 1
  end
end
local id = string.format('%.0f-%d', ms, seq)
redis.call('SET', KEYS[1], id)
redis.call('SET', KEYS[2], id, 'NX')

local size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
if size > 0 and ttl > 0 then
  local evicted = false
  local length = redis.call('XLEN', KEYS[3])
  if length >= size then
    local dropped = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', length - size + 1)
    evicted = dropped[#dropped][1]
  end
  local min_id = string.format('%.0f-0', math.max(ms - ttl, 0))
  local aged = redis.call('XREVRANGE', KEYS[3], '(' .. min_id, '-', 'COUNT', 1)
  if #aged > 0 and (not evicted or later(aged[1][1], evicted)) then
    evicted = aged[1][1]
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', size, id, 'm', ARGV[6])
  redis.call('XTRIM', KEYS[3], 'MINID', min_id)
  redis.call('PEXPIRE', KEYS[3], ttl)
  if evicted then
    redis.call('SET', KEYS[4], evicted, 'PX', ttl)
  else
    redis.call('PEXPIRE', KEYS[4], ttl)
  end
end
local receivers = redis.call('PUBLISH', ARGV[3], id .. '\\n' .. ARGV[4] .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[6])
return {id, receivers}
"""


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
        self.epoch = f"{prefix}:epoch"  # the first id of this Redis dataset: older ids lost their history
        self.bus = f"{prefix}:bus"

    def history(self, channel: str) -> str:
        return f"{self.prefix}:history:{channel}"

    def evicted(self, channel: str) -> str:
        return f"{self.prefix}:evicted:{channel}"

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
    """

    def __init__(
        self,
        url: str,
        *,
        history_size: int,
        history_ttl: float,
        prefix: str = "impulse",
        sent_timeout: float = 0.5,
        retry_ms: int = 1000,
        idempotency_ttl: float = 600.0,
    ) -> None:
        check_redis_url(url)
        self.url = url
        self.keys = _Keys(prefix)
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl * 1000)
        self._sent_timeout = sent_timeout
        self._retry_ms = retry_ms
        self._idempotency_ttl_ms = int(idempotency_ttl * 1000)
        self._client_instance: redis_py.Redis | None = None
        self._script: Any = None
        self._listener: Any = None  # gevent.Greenlet, once a local stream needs one
        self._first_subscription: Any = None  # gevent Event
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._delivered: MessageKey | None = None  # the newest message handed to local streams
        self._baseline: MessageKey | None = None  # the last id in Redis when first subscribed
        self._caught_up: dict[bytes, int] = {}  # delivery counts of caught-up messages, for reports
        self.subscribed = False

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
            self._script = self._client_instance.register_script(_PUBLISH_SCRIPT)
        return self._client_instance

    @staticmethod
    def _redis_error() -> type[Exception]:
        return _import_redis().RedisError  # type: ignore[no-any-return]

    # -- publishing ------------------------------------------------------------------------
    def publish(self, draft: Draft) -> Published:
        return self.publish_many([draft])[0]

    def publish_many(self, drafts: Sequence[Draft]) -> list[Published]:
        """Publish ``drafts`` all or none (one MULTI/EXEC), then gather the delivery counts."""
        client = self._client
        report = self.keys.report() if self._sent_timeout > 0 else ""
        try:
            if len(drafts) == 1:
                results = [self._run_script(client, drafts[0], report)]
            else:
                pipe = client.pipeline(transaction=True)
                for draft in drafts:
                    self._run_script(pipe, draft, report)
                results = pipe.execute()
        except self._redis_error() as exc:
            raise BackplaneUnavailable(
                "Backplane unavailable",
                f"Redis did not take the push ({exc}); nothing was published, retry later",
                headers={"Retry-After": "1"},
            ) from exc
        ids = [result[0] for result in results]
        receivers = [int(result[1]) for result in results]
        if not report:
            return [Published(i.decode(), n) for i, n in zip(ids, receivers, strict=True)]
        counts = self._gather_reports(report, dict(zip(ids, receivers, strict=True)))
        return [Published(i.decode(), counts[i]) for i in ids]

    def _run_script(self, client: Any, draft: Draft, report: str) -> Any:
        keys = [self.keys.last_id, self.keys.epoch, self.keys.history(draft.channel), self.keys.evicted(draft.channel)]
        args = [
            self._history_size,
            self._history_ttl_ms,
            self.keys.bus,
            report,
            draft.channel,
            encode_body(draft),
        ]
        return self._script(keys=keys, args=args, client=client)

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

        A gap: ``after`` predates this Redis dataset (restarted without persistence), a newer
        message was evicted (by count or age), or a channel's history expired as a whole while
        ``after`` is older than the TTL. When Redis cannot be read, the stream still opens,
        with a gap event: the client learns it may have missed something.
        """
        if after is None or self._history_size == 0 or self._history_ttl_ms == 0:
            return Replay([], gap=True)
        channels = list(channels)
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self.keys.epoch)
            pipe.time()
            pipe.get(self.keys.last_id)
            for channel in channels:
                pipe.xrange(self.keys.history(channel), min=f"({format_id(after)}", count=self._history_size)
                pipe.get(self.keys.evicted(channel))
                pipe.exists(self.keys.history(channel))
            results = pipe.execute()
        except self._redis_error() as exc:
            log.warning("replay: Redis unavailable (%s); the stream opens with a gap event", exc)
            return Replay([], gap=True)
        epoch, (seconds, microseconds), last_id = results[:3]
        now_ms = seconds * 1000 + microseconds // 1000
        cutoff = now_ms - self._history_ttl_ms
        # Newer than any id issued, as MemoryBackplane judges it: another service's, or forged.
        future = after > max(_key(last_id) if last_id is not None else (0, 0), (now_ms, 0))
        gap = future or epoch is None or after < _key(epoch)
        messages: list[Message] = []
        for index, channel in enumerate(channels):
            entries, evicted, exists = results[3 + 3 * index : 6 + 3 * index]
            if (evicted is not None and _key(evicted) > after) or (not exists and after[0] < cutoff):
                gap = True
            for entry_id, fields in entries:
                key = _key(entry_id)
                if key[0] < cutoff:
                    gap = True  # past its TTL, not yet trimmed: gone, as far as resume goes
                    continue
                messages.append(decode_message(key, channel, fields[b"m"]))
        if len(messages) > 1:
            messages.sort(key=lambda message: message.key)
        # The client has everything up to its id, which this process's listener may not have
        # delivered yet; never beyond the last id issued, so a foreign id cannot mute a stream.
        skip_through = min(after, _key(last_id)) if last_id is not None else None
        return Replay(messages, gap, skip_through)

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
            while len(batch) < BATCH:
                more = pubsub.get_message(timeout=0.0)
                if more is None:
                    break
                batch.append(more)
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
        for some: ``_handle`` drops those). A channel whose missed messages are no longer all
        in history has its streams closed with a retry hint: they resume by Last-Event-ID and
        get the gap event that the normal resume path sends.
        """
        if self._baseline is None:
            last: bytes | None = self._client.get(self.keys.last_id)  # type: ignore[assignment]
            self._baseline = _key(last) if last is not None else (0, 0)
            return
        after = self._delivered or self._baseline
        channels = sorted({channel for c in list(self._connections) for channel in c.channels})
        self._caught_up.clear()
        if not channels or self._history_size == 0 or self._history_ttl_ms == 0:
            return
        pipe = self._client.pipeline(transaction=True)
        for channel in channels:
            pipe.xrange(self.keys.history(channel), min=f"({format_id(after)}", count=self._history_size)
            pipe.get(self.keys.evicted(channel))
        results = pipe.execute()
        missed: list[Message] = []
        gapped: set[str] = set()
        for index, channel in enumerate(channels):
            entries, evicted = results[2 * index], results[2 * index + 1]
            if evicted is not None and _key(evicted) > after:
                gapped.add(channel)
            missed.extend(decode_message(_key(entry_id), channel, fields[b"m"]) for entry_id, fields in entries)
        missed.sort(key=lambda message: message.key)
        for message in missed:
            self._caught_up[message.id.encode()] = self._deliver_safely(message)
            self._delivered = message.key
        if missed:
            log.warning("caught up %d messages missed while resubscribing", len(missed))
        if gapped:
            for connection in list(self._connections):
                if gapped.intersection(connection.channels):
                    connection.close("messages were lost while resubscribing to Redis", self._retry_ms)

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
