"""The lean loop's reading of request heads, in process: a header block read once is looked
up for the next request with the same block, and nothing of one request reaches another."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config

from flask_impulse.server.http1 import Handover, LeanLoop

pytestmark = pytest.mark.unit

TRUSTED = ("127.0.0.1", 40000)  # gunicorn trusts 127.0.0.1's scheme headers by default
UNTRUSTED = ("192.0.2.7", 40000)


def lean_loop() -> LeanLoop:
    return LeanLoop(SimpleNamespace(cfg=Config()), ("127.0.0.1", 8080))


def parse(loop: LeanLoop, head: bytes, addr: Any = TRUSTED) -> tuple[Any, dict[str, Any], int]:
    return loop._parse(head, head.index(b"\r\n\r\n"), addr)


BLOCK = b"Host: broker\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"


def test_a_repeated_block_is_read_once_and_each_request_keeps_its_own_line() -> None:
    loop = lean_loop()
    first_request, first, length = parse(loop, b"POST /?a=1 HTTP/1.1\r\n" + BLOCK)
    assert len(loop._blocks) == 1
    # What the app may do to its environ and the request's headers stays with that request.
    first["HTTP_HOST"] = "changed"
    first_request.headers.append(("X-LATE", "1"))
    second_request, second, second_length = parse(loop, b"GET /other?b=2 HTTP/1.1\r\n" + BLOCK, UNTRUSTED)
    assert len(loop._blocks) == 1
    assert (length, second_length) == (12, 12)
    assert second["HTTP_HOST"] == "broker" and second["HTTP_AUTHORIZATION"] == "Bearer s3cret"
    assert second["CONTENT_TYPE"] == "application/json" and second["CONTENT_LENGTH"] == "12"
    assert (second["REQUEST_METHOD"], second["PATH_INFO"], second["QUERY_STRING"]) == ("GET", "/other", "b=2")
    assert second["REMOTE_ADDR"] == "192.0.2.7"
    assert ("X-LATE", "1") not in second_request.headers
    assert second_request.headers == [
        ("HOST", "broker"),
        ("AUTHORIZATION", "Bearer s3cret"),
        ("CONTENT-TYPE", "application/json"),
        ("CONTENT-LENGTH", "12"),
    ]


def test_a_scheme_header_is_judged_by_each_peer_not_remembered() -> None:
    loop = lean_loop()
    head = b"GET /?channel=c HTTP/1.1\r\nHost: broker\r\nX-Forwarded-Proto: https\r\n\r\n"
    assert parse(loop, head, TRUSTED)[1]["wsgi.url_scheme"] == "https"
    assert parse(loop, head, UNTRUSTED)[1]["wsgi.url_scheme"] == "http"
    assert parse(loop, head, TRUSTED)[1]["wsgi.url_scheme"] == "https"
    assert loop._blocks == {}


def test_a_block_handed_over_is_handed_over_every_time() -> None:
    loop = lean_loop()
    head = b"POST / HTTP/1.1\r\nHost: broker\r\nTransfer-Encoding: chunked\r\n\r\n"
    for _ in range(2):
        with pytest.raises(Handover):
            parse(loop, head)
    assert loop._blocks == {}


def test_what_is_remembered_is_bounded() -> None:
    loop = lean_loop()
    long_block = b"Host: broker\r\nX-Filler: " + b"x" * 3000 + b"\r\n\r\n"
    parse(loop, b"GET /?channel=c HTTP/1.1\r\n" + long_block)
    assert loop._blocks == {}  # longer than any publisher's head: read each time
    for index in range(600):
        parse(loop, b"GET /?channel=c HTTP/1.1\r\nHost: broker-%d\r\n\r\n" % index)
        assert len(loop._blocks) <= 512
