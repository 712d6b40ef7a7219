"""Properties, with hypothesis: any JSON payload and any string survive encoding, the wire and
a spec-following SSE parser unchanged; random push bodies, query strings and Last-Event-IDs
never get a 5xx or kill the worker. The in-process properties run many examples; those over
the wire of a live server run a bounded number."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_impulse.broker import Broker, MemoryBackplane, Message
from flask_impulse.sse import SSEDecoder, encode_event
from tests.conftest import SECRET, Service
from tests.support.fleet import worker_pids
from tests.support.server import LiveServer
from tests.support.streams import SSEStream

# Every code point, lone surrogates included: JSON can escape them, so they must come through.
ANY_TEXT = st.text(st.characters(exclude_categories=()))
# What UTF-8 can carry raw (an SSE field is UTF-8 text): everything but surrogates.
UTF8_TEXT = st.text(st.characters(exclude_categories=("Cs",)))
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)  # NaN and infinities become null, by design
    | ANY_TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(ANY_TEXT, children, max_size=5),
    max_leaves=25,
)
LIVE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_all(stream: bytes, chunk_size: int) -> list[Any]:
    decoder = SSEDecoder()
    events = []
    for start in range(0, len(stream), chunk_size):
        events.extend(decoder.feed(stream[start : start + chunk_size]))
    return events


BROKER = Broker(
    MemoryBackplane(0, 0), token_hash_key=b"k" * 32, max_connections=1, queue_max_messages=1, queue_max_bytes=1
)


@settings(max_examples=500, deadline=None)
@given(payload=JSON_VALUES, channel=UTF8_TEXT.filter(bool), chunk_size=st.integers(1, 64))
def test_any_json_payload_survives_encoding_and_decoding(payload: Any, channel: str, chunk_size: int) -> None:
    draft = BROKER.draft(channel, payload, None, None)
    frame = Message.create((1, 2), channel, draft.data).frame
    (event,) = decode_all(frame, chunk_size)
    assert json.loads(event.data) == {"channel": channel, "payload": payload}
    assert event.id == "1-2"


@settings(max_examples=500, deadline=None)
@given(text=UTF8_TEXT, chunk_size=st.integers(1, 64))
def test_any_string_survives_an_event_up_to_line_break_normalisation(text: str, chunk_size: int) -> None:
    # SSE cannot tell CR, LF and CRLF apart: every line break arrives as LF.
    (event,) = decode_all(encode_event(text.encode(), event="x"), chunk_size)
    assert event.data == text.replace("\r\n", "\n").replace("\r", "\n")
    assert event.event == "x"


@pytest.fixture(scope="module")
def live() -> Iterator[Service]:
    with LiveServer("wsgi:app", env={"REALTIME_SECRET": SECRET}, name="properties") as server:
        yield Service(server, server.url + "/", SECRET)


@pytest.fixture(scope="module")
def wire(live: Service) -> Iterator[tuple[SSEStream, str]]:
    channel = f"wire-{uuid.uuid4().hex[:8]}"
    with SSEStream(live.base, {"channel": channel}) as stream:
        yield stream, channel


@pytest.mark.live
@LIVE
@given(payload=JSON_VALUES)
def test_any_json_payload_survives_the_wire(live: Service, wire: tuple[SSEStream, str], payload: Any) -> None:
    stream, channel = wire
    assert live.push({"channel": channel, "payload": payload}).status_code == 200
    event = stream.next_event()
    assert json.loads(event.data) == {"channel": channel, "payload": payload}


@pytest.mark.live
@LIVE
@given(body=st.binary(max_size=300) | JSON_VALUES.map(lambda value: json.dumps(value).encode()))
def test_random_push_bodies_never_get_a_5xx(live: Service, body: bytes) -> None:
    response = requests.post(live.base, data=body, headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
    assert response.status_code < 500
    assert "error" in response.json() or "sent" in response.json()


PUSH_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "channel": JSON_VALUES | UTF8_TEXT,
        "payload": JSON_VALUES,
        "audience": JSON_VALUES
        | st.fixed_dictionaries({}, optional={"tokens": JSON_VALUES | st.lists(UTF8_TEXT), "topic": JSON_VALUES}),
    },
)


@pytest.mark.live
@LIVE
@given(body=PUSH_OBJECTS | st.lists(PUSH_OBJECTS, max_size=4))
def test_random_push_objects_are_sent_or_refused_with_400(live: Service, body: Any) -> None:
    response = live.push(body)
    assert response.status_code in (200, 400)
    assert set(response.json()) & {"sent", "error"}


QUERY_KEYS = st.sampled_from(["channel", "topic", "token", "lastEventId"]) | UTF8_TEXT
QUERIES = st.lists(st.tuples(QUERY_KEYS, UTF8_TEXT), max_size=5).map(lambda pairs: urlencode(pairs)) | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E)
)  # raw printable ASCII: broken escapes, stray '%', '&&', '=='...
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)


@pytest.mark.live
@LIVE
@given(query=QUERIES, last_event_id=st.none() | HEADER_VALUES)
def test_random_stream_queries_never_get_a_5xx(live: Service, query: str, last_event_id: str | None) -> None:
    request = f"GET /?{quote(query, safe='=&%+')} HTTP/1.1\r\nHost: x\r\n"
    if last_event_id is not None:
        request += f"Last-Event-ID: {last_event_id}\r\n"
    with socket.create_connection(("127.0.0.1", live.server.port), timeout=10) as client:
        client.sendall((request + "\r\n").encode("latin-1"))
        status_line = client.recv(4096).split(b"\r\n", 1)[0]
    status = int(status_line.split()[1])
    assert status in (200, 400), status_line


@pytest.mark.live
def test_the_worker_survived_the_random_input(live: Service) -> None:
    # Runs after the properties above: one worker from the start, alive, serving.
    assert len(worker_pids(live.server)) == 1
    assert "Traceback" not in live.server.log()
    assert live.health()["status"] == "ok"
    assert requests.get(live.server.health_url, timeout=5).status_code == 200
