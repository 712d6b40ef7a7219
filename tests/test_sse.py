"""The SSE encoder and decoder, byte for byte."""

from __future__ import annotations

import pytest

from flask_impulse.sse import (
    HEARTBEAT,
    ServerSentEvent,
    SSEDecoder,
    encode_comment,
    encode_event,
    encode_message,
    encode_retry,
)


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (encode_message("17-0", b'{"channel":"a","payload":1}'), b'id: 17-0\ndata: {"channel":"a","payload":1}\n\n'),
        (encode_event(b"one\ntwo", event="gap"), b"event: gap\ndata: one\ndata: two\n\n"),
        (encode_event(b"", event_id="5-1"), b"id: 5-1\ndata: \n\n"),
        (encode_comment("Connected to channel: chat"), b": Connected to channel: chat\n\n"),
        (encode_comment("two\nlines"), b": two\n: lines\n\n"),
        (encode_retry(1500), b"retry: 1500\n\n"),
        (HEARTBEAT, b": heartbeat\n\n"),
    ],
)
def test_encoders_write_exact_bytes(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: hello\n\n", [ServerSentEvent("hello")]),
        (b"data: a\r\ndata: b\r\n\r\n", [ServerSentEvent("a\nb")]),
        (b"data: a\rdata: b\r\r\n", [ServerSentEvent("a\nb")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [ServerSentEvent("bom")]),
        (b": comment\ndata: x\n\n", [ServerSentEvent("x")]),
        (b"id: 1-0\nevent: gap\ndata: {}\n\n", [ServerSentEvent("{}", "gap", "1-0")]),
        (b"id: 1-0\ndata: a\n\ndata: b\n\n", [ServerSentEvent("a", id="1-0"), ServerSentEvent("b", id="1-0")]),
        (b"data:no-space\n\n", [ServerSentEvent("no-space")]),
        (b"data\n\n", [ServerSentEvent("")]),
        (b"event: x\n\n", []),
        (b"id: a\x00b\ndata: x\n\n", [ServerSentEvent("x")]),
        (b"data: incomplete", []),
        (b"unknown: field\ndata: y\n\n", [ServerSentEvent("y")]),
    ],
)
def test_decoder_follows_the_spec(stream: bytes, expected: list[ServerSentEvent]) -> None:
    assert SSEDecoder().feed(stream) == expected


def test_decoder_handles_any_chunking() -> None:
    stream = b'\xef\xbb\xbfretry: 300\nid: 9-9\r\ndata: {"a":"\xc3\xa9"}\r\n\r\n: hb\n\ndata: z\n\n'
    whole = SSEDecoder()
    expected = whole.feed(stream)
    assert [e.data for e in expected] == ['{"a":"é"}', "z"]
    for size in (1, 2, 3, 7):
        decoder = SSEDecoder()
        events = []
        for start in range(0, len(stream), size):
            events.extend(decoder.feed(stream[start : start + size]))
        assert events == expected
        assert decoder.retry == 300
        assert decoder.last_event_id == "9-9"


def test_encoded_message_decodes_to_its_data() -> None:
    data = '{"channel":"c","payload":"line\\nbreak \u2028 sep"}'.encode()
    (event,) = SSEDecoder().feed(encode_message("3-4", data))
    assert event.data.encode() == data
    assert event.id == "3-4"


def test_a_decoder_keeps_no_comments_unless_asked() -> None:
    """A long-lived client receives a heartbeat comment every interval: none may pile up."""
    quiet = SSEDecoder()
    for _ in range(1000):
        assert quiet.feed(HEARTBEAT) == []
    assert quiet.comments == []
    kept = SSEDecoder(keep_comments=True)
    assert kept.feed(encode_comment("hello") + HEARTBEAT + encode_message("1-0", b"{}")) == [
        ServerSentEvent(data="{}", id="1-0")
    ]
    assert kept.comments == ["hello", "heartbeat"]
