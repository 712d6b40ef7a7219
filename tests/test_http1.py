"""The worker's lean HTTP/1.1 loop (``server.http1``), on raw keep-alive connections.

It serves the standalone service's plain requests, and hands everything else, with the
bytes it read, to gunicorn for the rest of the connection. Checked here: keep-alive,
pipelining, bodies that arrive in pieces or not at all, the hand-over of a request that is
not plain (in the middle of a connection, too), and answers alike to gunicorn's own, compared
with the same service run with an access log, which keeps gunicorn's handling.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import SECRET, Service
from tests.support.server import LiveServer
from tests.support.streams import ChunkedDecoder, unique

pytestmark = pytest.mark.live

TIMEOUT = 10


class Connection:
    """One keep-alive connection, reading answers one at a time; every read has a deadline."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        assert time.monotonic() < deadline, "no answer in time"
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def answer(self) -> tuple[str, dict[str, str], bytes]:
        """The next answer with a Content-Length: its status line, headers and body."""
        deadline = time.monotonic() + TIMEOUT
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(deadline), "closed before an answer"
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            assert self._fill(deadline), "closed within a body"
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        return lines[0], headers, rest[:length]

    def closed_by_server(self) -> bool:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                if not self._fill(deadline):
                    return True
            except ConnectionResetError:
                return True


def push_request(channel: str, payload: object = 1, *, extra: str = "", body: bytes | None = None) -> bytes:
    data = body if body is not None else json.dumps({"channel": channel, "payload": payload}).encode()
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SECRET}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}\r\n"
    )
    return head.encode() + data


def test_pushes_on_one_keep_alive_connection_until_it_asks_to_close(standalone: Service) -> None:
    with Connection(standalone.server.port) as connection:
        ids = []
        for _ in range(3):
            connection.send(push_request(unique("ka")))
            status, headers, body = connection.answer()
            assert status == "HTTP/1.1 200 OK"
            assert headers["connection"] == "keep-alive" and headers["server"] == "gunicorn" and headers["date"]
            assert headers["content-type"] == "application/json"
            ids.append(json.loads(body)["id"])
        assert len(set(ids)) == 3
        connection.send(push_request(unique("ka"), extra="Connection: close\r\n"))
        status, headers, _ = connection.answer()
        assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
        assert connection.closed_by_server()


def test_pipelined_requests_are_answered_in_order(standalone: Service) -> None:
    channels = [unique("pipelined") for _ in range(3)]
    with Connection(standalone.server.port) as connection:
        connection.send(b"".join(push_request(channel) for channel in channels))
        answers = [connection.answer() for _ in channels]
    assert [status for status, _, _ in answers] == ["HTTP/1.1 200 OK"] * 3
    ids = [json.loads(body)["id"] for _, _, body in answers]
    assert ids == sorted(ids, key=lambda value: tuple(int(part) for part in value.split("-")))


def test_a_body_that_arrives_in_pieces_is_read_whole(standalone: Service) -> None:
    request = push_request(unique("pieces"), {"text": "x" * 3000})
    with Connection(standalone.server.port) as connection:
        head_end = request.index(b"\r\n\r\n") + 4
        for start in range(0, len(request), 1000 if head_end < 1000 else head_end):
            connection.send(request[start : start + 1000])
            time.sleep(0.05)
        status, _, body = connection.answer()
    assert status == "HTTP/1.1 200 OK" and set(json.loads(body)) == {"sent", "id"}


def test_requests_that_are_not_plain_go_to_gunicorn_for_the_rest_of_the_connection(standalone: Service) -> None:
    channel = unique("handover")
    chunked = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SECRET}\r\n"
        f"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    ).encode()
    data = json.dumps({"channel": channel, "payload": 2}).encode()
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    with Connection(standalone.server.port) as connection:
        connection.send(push_request(channel))
        assert connection.answer()[0] == "HTTP/1.1 200 OK"
        connection.send(chunked)  # chunked framing: gunicorn's
        assert connection.answer()[0] == "HTTP/1.1 200 OK"
        connection.send(push_request(channel, extra="Expect: 100-continue\r\n"))
        assert connection.answer()[0] == "HTTP/1.1 100 Continue"
        assert connection.answer()[0] == "HTTP/1.1 200 OK"
        connection.send(push_request(channel))  # still served, by gunicorn now
        assert connection.answer()[0] == "HTTP/1.1 200 OK"


@pytest.mark.parametrize(
    "broken",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 9000 + b"\r\n\r\n",
    ],
    ids=["header without a colon", "two content lengths", "control byte in the target", "header too long"],
)
def test_a_broken_request_after_a_plain_one_gets_gunicorns_json_answer(standalone: Service, broken: bytes) -> None:
    with Connection(standalone.server.port) as connection:
        connection.send(push_request(unique("before-broken")))
        assert connection.answer()[0] == "HTTP/1.1 200 OK"
        connection.send(broken)
        status, headers, body = connection.answer()
    assert status.split()[1] in {"400", "431"} and headers["content-type"] == "application/json"
    assert "error" in json.loads(body)
    assert standalone.push({"channel": unique("after"), "payload": 1}).status_code == 200


def test_a_long_head_within_gunicorns_limits_is_served_by_gunicorn(standalone: Service) -> None:
    """Past a request line and a header line without a whole head, the lean loop stops
    buffering and hands over: 18 KB of headers, each line within gunicorn's limit."""
    padding = "".join(f"X-Pad-{i}: {'v' * 6000}\r\n" for i in range(3))
    with Connection(standalone.server.port) as connection:
        connection.send(push_request(unique("long-head"), extra=padding))
        status, _, body = connection.answer()
        assert status == "HTTP/1.1 200 OK" and set(json.loads(body)) == {"sent", "id"}
        connection.send(push_request(unique("after-long-head")))
        assert connection.answer()[0] == "HTTP/1.1 200 OK"


def test_a_trusted_proxys_scheme_header_is_read_and_contradicting_ones_refused(standalone: Service) -> None:
    with Connection(standalone.server.port) as connection:
        connection.send(push_request(unique("proxied"), extra="X-Forwarded-Proto: https\r\n"))
        assert connection.answer()[0] == "HTTP/1.1 200 OK"
        connection.send(push_request("c", extra="X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n"))
        status, _, body = connection.answer()
    assert status.startswith("HTTP/1.1 400") and "error" in json.loads(body)


def test_a_body_over_the_limit_is_413_and_the_connection_still_serves(standalone: Service) -> None:
    too_large = push_request("c", body=b"x" * (1024 * 1024 + 1))
    with Connection(standalone.server.port) as connection:
        connection.send(too_large)
        status, _, body = connection.answer()
        assert status == "HTTP/1.1 413 REQUEST ENTITY TOO LARGE" and json.loads(body)["error"] == "Payload too large"
        connection.send(push_request(unique("after-413")))  # the unread body was drained first
        assert connection.answer()[0] == "HTTP/1.1 200 OK"


def test_a_body_cut_short_is_the_clients_mistake(standalone: Service) -> None:
    log_start = len(standalone.server.log())
    with socket.create_connection(("127.0.0.1", standalone.server.port), timeout=TIMEOUT) as sock:
        sock.sendall(push_request("c")[:-3])
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + TIMEOUT
        answer = b""
        while chunk := sock.recv(65536):
            assert time.monotonic() < deadline
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"Malformed request body" in answer
    deadline = time.monotonic() + TIMEOUT
    while "Malformed request body" not in standalone.server.log()[log_start:]:
        assert time.monotonic() < deadline, "the client's mistake was not logged"
        time.sleep(0.05)
    assert "Traceback" not in standalone.server.log()[log_start:]


def test_a_stream_is_chunked_and_let_go_when_the_client_leaves(standalone: Service) -> None:
    channel = unique("lean-stream")
    with Connection(standalone.server.port) as connection:
        connection.send(f"GET /?channel={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        deadline = time.monotonic() + TIMEOUT
        while b"\r\n\r\n" not in connection.buffer:
            assert connection._fill(deadline)
        head, _, rest = connection.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
        decoder = ChunkedDecoder()
        body = decoder.feed(rest)
        assert standalone.push({"channel": channel, "payload": {"n": 1}}).json()["sent"] == 1
        while b'"n":1' not in body:
            assert time.monotonic() < deadline, "the push never arrived"
            body += decoder.feed(connection.sock.recv(65536))
        assert body.startswith(f": Connected to channel: {channel}".encode())
    deadline = time.monotonic() + TIMEOUT
    while standalone.push({"channel": channel, "payload": 2}).json()["sent"] != 0:
        assert time.monotonic() < deadline, "the stream was never let go"
        time.sleep(0.05)


# -- alike to gunicorn's own handling ------------------------------------------------------------
@pytest.fixture(scope="module")
def with_access_log() -> Iterator[LiveServer]:
    """The same service, served by gunicorn's handling: an access log turns the lean loop off."""
    with LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="gunicorn-handled", access_log=True) as server:
        yield server


REQUESTS = {
    "push": (
        "POST",
        "/",
        {"json": {"channel": "alike", "payload": 1}, "headers": {"Authorization": f"Bearer {SECRET}"}},
    ),
    "refused push": ("POST", "/", {"json": {"channel": "alike"}}),
    "bad json": ("POST", "/", {"data": b"{", "headers": {"Authorization": f"Bearer {SECRET}"}}),
    "health": ("GET", "/health", {}),
    "not found": ("GET", "/nowhere", {}),
    "preflight": (
        "OPTIONS",
        "/",
        {"headers": {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}},
    ),
    "browser client": ("GET", "/client.js", {}),
    "no channel": ("GET", "/", {}),
}


@pytest.mark.parametrize("name", REQUESTS)
def test_answers_alike_to_gunicorns(standalone: Service, with_access_log: LiveServer, name: str) -> None:
    method, path, options = REQUESTS[name]
    answers = []
    for url in (standalone.server.url, with_access_log.url):
        response = requests.request(method, url + path, timeout=TIMEOUT, **options)  # type: ignore[arg-type]
        # Dates differ, and so do lengths where figures do (uptime); the bodies are compared below.
        varying = {"date", "content-length"}
        headers = {key.lower(): value for key, value in response.headers.items() if key.lower() not in varying}
        body = response.json() if response.headers.get("Content-Type") == "application/json" else response.content
        if isinstance(body, dict):
            # What differs between two servers: ids, uptimes, and streams other tests hold open.
            body = {key: value for key, value in body.items() if key not in {"id", "uptime", "connections"}}
        answers.append((response.status_code, response.reason, headers, body))
    assert answers[0] == answers[1]


def test_a_stream_head_is_alike_to_gunicorns(standalone: Service, with_access_log: LiveServer) -> None:
    heads = []
    for url in (standalone.server.url, with_access_log.url):
        with requests.get(url + "/", params={"channel": "alike"}, stream=True, timeout=TIMEOUT) as response:
            heads.append((response.status_code, {k.lower(): v for k, v in response.headers.items() if k != "Date"}))
    assert heads[0] == heads[1]
