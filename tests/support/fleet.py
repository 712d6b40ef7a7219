"""Helpers for the reliability tests: many raw streams read by one selector loop (tracking
which ones the server ended), and the worker processes of a live server with their memory."""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psutil

from flask_impulse.sse import ServerSentEvent, SSEDecoder
from tests.support.server import LOG_DIR, LiveServer
from tests.support.streams import ChunkedDecoder, StreamTimeout


def worker_pids(server: LiveServer) -> list[int]:
    """The gunicorn workers of ``server`` (children of its arbiter)."""
    assert server.process is not None
    return [child.pid for child in psutil.Process(server.process.pid).children()]


def wait_for_workers(
    server: LiveServer, count: int = 1, *, other_than: frozenset[int] = frozenset(), timeout: float = 20
) -> list[int]:
    """Wait until ``server`` has ``count`` workers, none of them in ``other_than``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in worker_pids(server) if pid not in other_than]
        if len(pids) == count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"no {count} new worker(s) after {timeout}s; see {server.log_path}")


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB, as /proc/<pid>/status says (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


_LAST_CHUNK = b"\r\n0\r\n\r\n"


def decode_response(raw: bytes) -> tuple[int, SSEDecoder, list[ServerSentEvent]]:
    """An HTTP/1.1 response with a chunked SSE body, read as far as it goes."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    decoder = SSEDecoder(keep_comments=True)
    return status, decoder, decoder.feed(ChunkedDecoder().feed(body))


class StreamFleet:
    """``count`` raw SSE streams on one selector: bytes received, and when each was ended."""

    def __init__(
        self,
        base_url: str,
        count: int,
        params: dict[str, str] | list[tuple[str, str]],
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> None:
        parts = urlsplit(base_url)
        path = (parts.path or "/") + "?" + urlencode(params)
        head = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        request = (head + "\r\n").encode()
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.data: dict[int, bytearray] = {}
        self.ended_at: dict[int, float] = {}
        for index in range(count):
            sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
            sock.sendall(request)
            sock.setblocking(False)
            self.socks.append(sock)
            self.data[index] = bytearray()
            self.selector.register(sock, selectors.EVENT_READ, index)

    def pump(self, until: Callable[[StreamFleet], bool], timeout: float) -> None:
        """Read every stream until ``until(self)`` holds; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while not until(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeout("the streams did not get what was expected before the deadline")
            for key, _ in self.selector.select(min(remaining, 0.2)):
                index = key.data
                try:
                    chunk = key.fileobj.recv(262144)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except ConnectionError:
                    chunk = b""
                if chunk:
                    self.data[index] += chunk
                if not chunk or self.data[index].endswith(_LAST_CHUNK):
                    # The response is over (its last chunk), or the connection is.
                    self.ended_at[index] = time.monotonic()
                    self.selector.unregister(key.fileobj)

    def decoded(self, index: int) -> tuple[int, SSEDecoder, list[ServerSentEvent]]:
        """Stream ``index`` as a client sees it: status, its decoder (retry, comments), its events."""
        return decode_response(bytes(self.data[index]))

    def count_with(self, needle: bytes) -> int:
        return sum(1 for data in self.data.values() if needle in data)

    def all_ended(self) -> bool:
        return len(self.ended_at) == len(self.socks)

    def close(self) -> None:
        for index, sock in enumerate(self.socks):
            if index not in self.ended_at:
                self.selector.unregister(sock)
            sock.close()
        self.selector.close()

    def __enter__(self) -> StreamFleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def record_figure(name: str, **values: object) -> None:
    """Keep a measured figure for docs/reliability.md (tests assert behaviour, not time):
    one JSON line in tests/.logs/figures.jsonl, and on stdout for ``pytest -s``."""
    line = json.dumps({"figure": name, **values})
    print(line)
    LOG_DIR.mkdir(exist_ok=True)
    with open(LOG_DIR / "figures.jsonl", "a") as figures:
        figures.write(line + "\n")


class BackgroundReader:
    """One stream read by a thread as fast as it comes: its events, and whether it ended."""

    def __init__(self, base_url: str, params: dict[str, str], headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        path = (parts.path or "/") + "?" + urlencode(params)
        head = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=60)
        self.sock.sendall((head + "\r\n").encode())
        self.events: list[ServerSentEvent] = []
        self.ended = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chunks, decoder = ChunkedDecoder(), SSEDecoder()
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed before the response head")
                head += data
            head, _, rest = head.partition(b"\r\n\r\n")
            self.events.extend(decoder.feed(chunks.feed(rest)))
            while not chunks.finished:
                data = self.sock.recv(262144)
                if not data:
                    break
                self.events.extend(decoder.feed(chunks.feed(data)))
        except OSError as exc:  # a timeout, or a reset
            self.error = exc
        finally:
            self.ended = True

    def close(self) -> None:
        self.sock.close()
        self._thread.join(10)

    def __enter__(self) -> BackgroundReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
