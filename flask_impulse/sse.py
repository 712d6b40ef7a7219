"""Server-Sent Events on the wire: the encoder the broker writes with, and a decoder that
follows the WHATWG event-stream parsing rules, shared by the Python client and the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

HEARTBEAT = b": heartbeat\n\n"


def encode_event(data: bytes, *, event_id: str | None = None, event: str | None = None) -> bytes:
    """One event. ``data`` may span lines: each becomes its own ``data:`` field.

    Every line break (CR, LF or CRLF) arrives as LF, the only one a decoder can rebuild; a
    trailing line break survives as an empty last ``data:`` field.
    """
    parts = []
    if event_id is not None:
        parts.append(b"id: " + event_id.encode() + b"\n")
    if event is not None:
        parts.append(b"event: " + event.encode() + b"\n")
    for line in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def encode_message(event_id: str, data: bytes) -> bytes:
    """A broker message. Compact JSON never holds a raw line break, so one ``data:`` line."""
    return b"id: " + event_id.encode() + b"\ndata: " + data + b"\n\n"


def encode_comment(text: str) -> bytes:
    return b"".join(b": " + line.encode() + b"\n" for line in text.splitlines() or [""]) + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    return b"retry: " + str(int(milliseconds)).encode() + b"\n\n"


@dataclass(frozen=True)
class ServerSentEvent:
    """A dispatched event, as an EventSource would see it."""

    data: str
    event: str = "message"
    id: str = ""


class SSEDecoder:
    """Incremental decoder: feed it bytes in chunks of any size, get events back.

    Follows the spec: lines end in CR, LF or CRLF; a leading BOM is dropped; comments are
    ignored; ``id`` containing NUL is ignored; the last event id persists across events.
    With ``keep_comments``, :attr:`comments` collects every comment's text; it is off by
    default because a long-lived stream receives a heartbeat comment every interval.
    """

    def __init__(self, *, keep_comments: bool = False) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        #: The latest ``retry:`` value, in milliseconds: the reconnection time the server asks for.
        self.retry: int | None = None
        self.last_event_id = ""
        self._started = False
        self._keep_comments = keep_comments
        #: The comments received, oldest first (only with ``keep_comments``).
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not self._started:
            self._buffer += chunk
            if len(self._buffer) < 3 and b"\xef\xbb\xbf".startswith(self._buffer):
                return []
            self._started = True
            if self._buffer.startswith(b"\xef\xbb\xbf"):
                self._buffer = self._buffer[3:]
        else:
            self._buffer += chunk
        events = []
        for line in self._split_lines():
            event = self._process_line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events

    def _split_lines(self) -> Iterator[bytes]:
        buffer = self._buffer
        start = 0
        length = len(buffer)
        # The next CR and LF at or after start; -1 once there are none left. Each is searched
        # for again only when passed, so a buffer of many LF-only lines is scanned once, not
        # once per line.
        cr = lf = -2
        while start < length:
            if -1 != cr < start:
                cr = buffer.find(b"\r", start)
            if -1 != lf < start:
                lf = buffer.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == length:
                    break  # a CR at the end may be the first half of a CRLF: wait for more
                end, next_start = cr, cr + (2 if buffer[cr + 1 : cr + 2] == b"\n" else 1)
            else:
                end, next_start = lf, lf + 1
            yield buffer[start:end]
            start = next_start
        self._buffer = buffer[start:]

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            if self._keep_comments:
                self.comments.append(line[1:].removeprefix(" "))
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(data="\n".join(self._data), event=self._event or "message", id=self.last_event_id)
        self._data = []
        self._event = ""
        return event
