"""Direct writes: under our gunicorn config, publishers send frames to a stream's socket
themselves, framed as gunicorn would frame them. Whatever the socket does not take at once
goes through the stream's writer; nothing may be lost, reordered or mis-framed on the way."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from gunicorn.config import Config

from flask_impulse.gunicorn_config import frames_plain_http1
from flask_impulse.sse import SSEDecoder
from tests.conftest import SECRET, Service, serve
from tests.support.streams import ChunkedDecoder, SSEStream, unique

pytestmark = pytest.mark.live


def test_direct_writes_only_where_gunicorn_frames_plain_http1() -> None:
    assert frames_plain_http1(Config())
    tls = Config()
    tls.set("certfile", "/path/to/cert.pem")
    assert not frames_plain_http1(tls)
    uwsgi = Config()
    uwsgi.set("protocol", "uwsgi")
    assert not frames_plain_http1(uwsgi)
    http2 = Config()
    http2.set("http_protocols", "h2,h1")
    assert not frames_plain_http1(http2)


def test_http10_client_gets_the_stream_unchunked(standalone: Service) -> None:
    channel = unique("direct")
    with socket.create_connection(("127.0.0.1", standalone.server.port), timeout=10) as sock:
        sock.sendall(f"GET /?channel={channel} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        while b"Connected to channel" not in received:
            received += sock.recv(65536)
        for index in range(3):
            assert standalone.push({"channel": channel, "payload": index}).json()["sent"] == 1
        while received.count(b"data: ") < 3:
            chunk = sock.recv(65536)
            assert chunk, "stream closed early"
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    events = SSEDecoder().feed(body)
    assert [json.loads(event.data)["payload"] for event in events] == [0, 1, 2]
    assert all(event.id for event in events)


def test_burst_to_a_client_that_reads_late_arrives_whole_and_in_order(standalone: Service) -> None:
    channel = unique("direct")
    # 5.6 MB: more than a stalled loopback socket takes (the kernel grows its send buffer to
    # about 4 MB), less than the stream's queue bound (8 MiB). Sends come up short.
    count, padding = 700, "x" * 8000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", standalone.server.port))
        sock.sendall(f"GET /?channel={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        while b"Connected to channel" not in received:
            received += sock.recv(65536)
        for first in range(0, count, 100):
            indexes = range(first, first + 100)
            batch = [{"channel": channel, "payload": {"index": i, "padding": padding}} for i in indexes]
            assert standalone.push(batch).json()["sent"] == 100
        decoder, body = SSEDecoder(), ChunkedDecoder()
        events = decoder.feed(body.feed(received.partition(b"\r\n\r\n")[2]))
        while len(events) < count:
            chunk = sock.recv(65536)
            assert chunk, "stream closed early"
            events += decoder.feed(body.feed(chunk))
    assert [json.loads(event.data)["payload"]["index"] for event in events] == list(range(count))


@pytest.fixture(scope="module")
def fast_heartbeat() -> Iterator[Service]:
    with serve("wsgi:app", "heartbeat", REALTIME_SECRET=SECRET, IMPULSE_HEARTBEAT_INTERVAL="0.1") as service:
        yield service


def test_heartbeats_and_direct_writes_interleave_cleanly(fast_heartbeat: Service) -> None:
    channel = unique("direct")
    with SSEStream(fast_heartbeat.base, {"channel": channel}) as stream:
        for index in range(20):
            assert fast_heartbeat.push({"channel": channel, "payload": index}).json()["sent"] == 1
            time.sleep(0.03)  # pushes between heartbeats, not a timing assertion
        events = stream.events(20, timeout=30)
        stream.assert_silent(0.3)
    assert [json.loads(event.data)["payload"] for event in events] == list(range(20))
    assert "heartbeat" in stream.decoder.comments


def test_an_idle_stream_gets_one_heartbeat_per_interval(fast_heartbeat: Service) -> None:
    """A parked writer's timer is restarted for each wait: it fires an interval later, not at
    once (a one-shot libev timer started again after it fired did, and a stream sent
    heartbeats as fast as the socket took them). Load can only make heartbeats rarer, so the
    bound is on their number, from above; one must come."""
    with SSEStream(fast_heartbeat.base, {"channel": unique("idle")}) as stream:
        started = time.monotonic()
        stream.assert_silent(1.0)
        elapsed = time.monotonic() - started
    beats = sum(1 for comment in stream.decoder.comments if "heartbeat" in comment)
    assert 1 <= beats <= elapsed / 0.1 + 2, f"{beats} heartbeats in {elapsed:.2f} s at a 0.1 s interval"
