"""Test helpers for apps that push, loaded by pytest as a plugin (the ``pytest11`` entry point
``flask_impulse``) once the package is installed:

- ``impulse_pushes``: records every in-process push of the app under test, without a server
  (through the :data:`flask_impulse.signals.pushed` signal), with assertions on them;
- ``live_impulse``: a real standalone service (gunicorn, gevent workers, a free port, a random
  secret) for the whole test session, with its URL, secret and a ``ServerClient``;
- :class:`Subscriber`: collects the events of one channel of a live service, every wait bounded.

Loading the plugin imports only the standard library, pytest and blinker: Flask, gevent,
gunicorn and requests are imported when a fixture is used, so a project that never asks for
one pays nothing for it. See docs/testing.md.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import pytest

from .signals import PushRecord, pushed

if TYPE_CHECKING:
    from .client import ServerClient
    from .sse import ServerSentEvent

__all__ = ["LiveImpulse", "PushRecord", "PushRecorder", "Subscriber"]


class _Any:
    """Stands for "not checked" in :meth:`PushRecorder.assert_pushed` (``None`` is a value there)."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


class PushRecorder:
    """The pushes made while it records, oldest first, as :class:`PushRecord` items."""

    def __init__(self) -> None:
        self.pushes: list[PushRecord] = []
        self._lock = threading.Lock()

    def _record(self, sender: object, *, push: PushRecord, **extra: object) -> None:
        with self._lock:
            self.pushes.append(push)

    def start(self) -> PushRecorder:
        pushed.connect(self._record)
        return self

    def stop(self) -> None:
        pushed.disconnect(self._record)

    def __enter__(self) -> PushRecorder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def on(self, channel: str) -> list[PushRecord]:
        """The pushes on ``channel``."""
        return [push for push in self.pushes if push.channel == channel]

    def payloads(self, channel: str) -> list[Any]:
        """The payloads pushed on ``channel``, in order."""
        return [push.payload for push in self.on(channel)]

    def clear(self) -> None:
        with self._lock:
            self.pushes.clear()

    def assert_pushed(
        self,
        channel: str,
        payload: Any = ANY,
        *,
        tokens: Any = ANY,
        topic: Any = ANY,
        count: int | None = None,
    ) -> PushRecord:
        """The last push on ``channel`` matching what is given (``tokens`` in any order);
        with ``count``, exactly that many must match. Fails naming what was pushed instead."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        wanted_tokens = (
            tokens if tokens is ANY or tokens is None else sorted([tokens] if isinstance(tokens, str) else tokens)
        )
        matches = [
            push
            for push in self.on(channel)
            if (payload is ANY or push.payload == payload)
            and (topic is ANY or push.topic == topic)
            and (wanted_tokens is ANY or (None if push.tokens is None else sorted(push.tokens)) == wanted_tokens)
        ]
        wanted = f"{channel!r} payload={payload!r} tokens={tokens!r} topic={topic!r}"
        if not matches or (count is not None and len(matches) != count):
            found = "\n".join(f"  {push!r}" for push in self.pushes) or "  (no push at all)"
            times = "" if count is None else f" {count} time(s), found {len(matches)}"
            raise AssertionError(f"expected a push on {wanted}{times}; pushed:\n{found}")
        return matches[-1]

    def assert_not_pushed(self, channel: str | None = None) -> None:
        """No push at all, or none on ``channel``."""
        __tracebackhide__ = True
        found = self.pushes if channel is None else self.on(channel)
        if found:
            raise AssertionError("expected no push" + (f" on {channel!r}" if channel else "") + f"; pushed: {found!r}")

    def __len__(self) -> int:
        return len(self.pushes)

    def __iter__(self) -> Iterator[PushRecord]:
        return iter(list(self.pushes))


class Subscriber:
    """One stream of a live service, read by a thread into a queue: :meth:`wait_for` waits
    for events with a deadline, so a broken service fails a test instead of hanging it.

    ::

        with Subscriber(live_impulse.url, "chat:message", topic="room-1") as events:
            live_impulse.client.push("chat:message", {"text": "hi"}, topic="room-1")
            assert events.payloads(1) == [{"text": "hi"}]
    """

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        token: str | None = None,
        topic: str | None = None,
        timeout: float = 10.0,
        verify: bool | str = True,
    ) -> None:
        from .sse import SSEDecoder

        parts = urlsplit(url)
        params = {"channel": channel, **({"token": token} if token else {}), **({"topic": topic} if topic else {})}
        self.timeout = timeout
        self.events: list[ServerSentEvent] = []
        self._queue: queue.Queue[ServerSentEvent | BaseException] = queue.Queue()
        self._decoder = SSEDecoder(keep_comments=True)
        self._connected = threading.Event()
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            from .client.tls import ssl_context

            context = ssl_context(verify)
            connection = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=context)
        else:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        connection.request("GET", f"{parts.path or '/'}?{urlencode(params)}", headers={"Accept": "text/event-stream"})
        # Kept to shut down in close(): closing alone would not wake the reader thread's recv.
        self._socket = connection.sock
        self._connection = connection
        self._response = connection.getresponse()
        if self._response.status != 200:
            body = self._response.read().decode(errors="replace")
            self.close()
            raise AssertionError(f"subscribing to {channel!r} was answered {self._response.status}: {body}")
        # A live stream is never idle for two heartbeats (30 s each).
        self._socket.settimeout(75)
        self._reader = threading.Thread(target=self._read, name=f"impulse-subscriber-{channel}", daemon=True)
        self._reader.start()
        # The stream opens with a comment; from then on, a push reaches this subscriber.
        if not self._connected.wait(timeout):
            self.close()
            raise AssertionError(f"the stream of {channel!r} sent nothing within {timeout} s")

    def _read(self) -> None:
        try:
            while chunk := self._response.read1(65536):
                for event in self._decoder.feed(chunk):
                    self._queue.put(event)
                if self._decoder.comments:
                    self._connected.set()
        except Exception as exc:  # the stream ended or was closed: tell a waiting test why
            self._queue.put(exc)
        else:
            self._queue.put(ConnectionError("the service ended the stream"))
        finally:
            self._connected.set()

    def wait_for(self, count: int, timeout: float | None = None) -> list[ServerSentEvent]:
        """The first ``count`` events of the stream, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.events) < count:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(
                    f"expected {count} event(s), received {len(self.events)} before the deadline: {self.events!r}"
                ) from None
            if isinstance(item, BaseException):
                self._queue.put(item)  # every later wait fails the same way
                raise AssertionError(f"expected {count} event(s), the stream ended after {len(self.events)}") from item
            self.events.append(item)
        return self.events[:count]

    def payloads(self, count: int, timeout: float | None = None) -> list[Any]:
        """The payloads of the first ``count`` events."""
        return [json.loads(event.data).get("payload") for event in self.wait_for(count, timeout)]

    def assert_silent(self, seconds: float) -> None:
        """No event beyond those already read arrives within ``seconds``."""
        known = len(self.events)
        try:
            self.wait_for(known + 1, seconds)
        except AssertionError:
            if len(self.events) == known:
                return
            raise
        raise AssertionError(f"unexpected event {self.events[known]!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._connection.close()
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(5)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveImpulse:
    """The standalone service, ``python -m flask_impulse``, on a free loopback port with a
    random secret; its output goes to :attr:`log_path`. A context manager, stopped by PID."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
        log_dir: Path | None = None,
        scheme: str = "http",
        verify: bool | str = True,
    ) -> None:
        self.port = _free_port()
        self.secret = secrets.token_urlsafe(32)
        self.url = f"{scheme}://127.0.0.1:{self.port}/"
        self.verify = verify
        self.env = dict(env or {})
        self.args = list(args or [])
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="flask-impulse-")) / f"service-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._client: ServerClient | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "flask_impulse", "--host", "127.0.0.1", "--port", str(self.port), *self.args]

    def start(self, timeout: float = 30) -> LiveImpulse:
        import requests

        # The secret goes by environment, not argv, where any process of the machine could read it.
        env = {**os.environ, "REALTIME_SECRET": self.secret, **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited ({self.process.returncode}):\n{self.log()}")
            try:
                if requests.get(self.url + "health", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the service did not answer /health within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def client(self) -> ServerClient:
        """A ``ServerClient`` holding the service's secret."""
        if self._client is None:
            from .client import ServerClient

            self._client = ServerClient(self.url, token=self.secret, verify=self.verify)
        return self._client

    def subscribe(
        self, channel: str, *, token: str | None = None, topic: str | None = None, timeout: float = 10.0
    ) -> Subscriber:
        """A :class:`Subscriber` to ``channel``, connected when this returns."""
        return Subscriber(self.url, channel, token=token, topic=topic, timeout=timeout, verify=self.verify)

    def stop(self, timeout: float = 10) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> LiveImpulse:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


# -- the pytest plugin ---------------------------------------------------------------------
@pytest.fixture
def impulse_pushes() -> Iterator[PushRecorder]:
    """Every in-process push made during the test (``Impulse.push``/``publish``), recorded."""
    with PushRecorder() as recorder:
        yield recorder


@pytest.fixture(scope="session")
def live_impulse_env() -> dict[str, str]:
    """Extra environment for ``live_impulse`` (``IMPULSE_*`` settings): override it in a conftest."""
    return {}


@pytest.fixture(scope="session")
def live_impulse(live_impulse_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveImpulse]:
    """A standalone flask-impulse service for the test session: ``.url``, ``.secret``,
    ``.client`` (a ``ServerClient``) and ``.subscribe(channel)``."""
    with LiveImpulse(env=live_impulse_env, log_dir=tmp_path_factory.mktemp("live_impulse")) as service:
        yield service
