"""Hardening of input and logs, against live services: nothing a client sends reaches a 500
or an ERROR traceback, no typo widens a push, no token that an app's hook puts in an
exception reaches a log, and both backplanes answer a resume alike.

Each test reads the server log written while it ran: an ERROR line or a traceback there
is a bug of ours, a client's mistake is logged at INFO or WARNING without one.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from flask_impulse.broker.message import format_id, parse_id
from tests.conftest import SECRET, Service
from tests.support.redis import RedisServer
from tests.support.secrets import HOOK_TOKEN, remember
from tests.support.server import LiveServer
from tests.support.streams import SSEStream, unique


class LogWindow:
    """What a server wrote to its log from now on."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.start = len(server.log())

    def text(self) -> str:
        return self.server.log()[self.start :]

    def assert_no_error(self) -> None:
        written = self.text()
        assert "Traceback" not in written, written
        # gunicorn's error log writes "[ERROR]", Flask's app logger "ERROR in <module>:".
        assert "[ERROR]" not in written and " ERROR in " not in written, written


# -- ids: malformed ones are gaps, not 500s --------------------------------------------------
MALFORMED_IDS = [
    "²-0",  # a superscript two: str.isdigit() says yes, int() says no
    "0-²",
    "\u0661\u0662\u0663-\u0660",  # Arabic-Indic digits: int() reads them, but they are no id of ours
    "1_000-0",  # int() accepts underscores
    " 1-0",
    "+1-0",
]


@pytest.mark.parametrize("value", [*MALFORMED_IDS, "1-0\n", "1-", "-0", "1-2-3", "1" * 17 + "-0", "\udcb2-0"])
def test_only_ids_of_ascii_digits_parse(value: str) -> None:
    assert parse_id(value) is None


def test_the_ids_we_issue_parse_back() -> None:
    for key in [(0, 0), (1764620000000, 7), (10**16 - 1, 10**16 - 1)]:
        assert parse_id(format_id(key)) == key


@pytest.mark.parametrize("last_event_id", MALFORMED_IDS)
@pytest.mark.parametrize("where", ["query", "header"])
def test_a_malformed_last_event_id_opens_the_stream_with_a_gap(
    standalone: Service, last_event_id: str, where: str
) -> None:
    channel = unique("malformed")
    log = LogWindow(standalone.server)
    params: dict[str, str] = {"channel": channel}
    headers: dict[str, str] = {}
    if where == "query":
        params["lastEventId"] = last_event_id
    else:
        headers["Last-Event-ID"] = last_event_id
    with SSEStream(standalone.base, params, headers=headers) as stream:
        assert stream.status == 200
        gap = stream.next_event()
        assert gap.event == "gap"
        standalone.push({"channel": channel, "payload": "live"})
        assert stream.messages(1) == [{"channel": channel, "payload": "live"}]
    log.assert_no_error()


def test_a_last_event_id_header_of_raw_non_utf8_bytes_is_a_gap(standalone: Service) -> None:
    channel = unique("raw-id")
    log = LogWindow(standalone.server)
    # A lone surrogate goes out as the raw byte 0xB2 (latin-1 "²"): what a forged header holds.
    with SSEStream(standalone.base, {"channel": channel}, headers={"Last-Event-ID": "\udcb2-0"}) as stream:
        assert stream.status == 200
        assert stream.next_event().event == "gap"
    log.assert_no_error()


# -- framing: malformed chunked bodies are 400 JSON ------------------------------------------
def raw_request(base: str, head: str, body: bytes, *, half_close: bool = False) -> tuple[int, bytes]:
    """Send bytes as they are and read the answer: status and body (the server closes after it)."""
    host, port = base.split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in answer or not _complete(answer):
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head_bytes, _, rest = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), rest


def _complete(answer: bytes) -> bool:
    head, _, rest = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value)
    return False


def chunked_push_head(service: Service) -> str:
    path = "/" + service.base.split("//", 1)[1].split("/", 1)[1]
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {service.secret}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    )


@pytest.mark.parametrize(
    ("body", "half_close"),
    [
        (b"-5\r\nhello\r\n0\r\n\r\n", False),  # a negative size
        (b"0x5\r\nhello\r\n0\r\n\r\n", False),  # a size in C's hex notation
        (b"5;ext\rx\r\nhello\r\n0\r\n\r\n", False),  # a bare CR in a chunk extension
        (b'a\r\n{"chan', True),  # the client closes in the middle of a chunk
        (b"5\r\nhelloXX0\r\n\r\n", False),  # no CRLF after the chunk data
    ],
    ids=["negative-size", "0x-size", "bare-cr-in-extension", "close-mid-chunk", "no-chunk-terminator"],
)
def test_a_malformed_chunked_push_body_is_400_json(service: Service, body: bytes, half_close: bool) -> None:
    log = LogWindow(service.server)
    status, answer = raw_request(service.base, chunked_push_head(service), body, half_close=half_close)
    assert status == 400
    assert json.loads(answer)["error"] == "Malformed request body"
    log.assert_no_error()
    assert "WARNING" in log.text() and "Malformed request body" in log.text()  # the client's mistake
    assert service.push({"channel": unique("after"), "payload": 1}).status_code == 200


def test_an_unsupported_transfer_coding_is_501_without_an_error_traceback(standalone: Service) -> None:
    log = LogWindow(standalone.server)
    head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SECRET}\r\nTransfer-Encoding: xchunked\r\n"
    status, answer = raw_request(standalone.base, head, b"5\r\nhello\r\n0\r\n\r\n")
    assert status == 501
    assert json.loads(answer) == {"error": "Not Implemented"}
    log.assert_no_error()
    assert "Not Implemented" in log.text()  # logged, at warning level


# -- logs: an app hook's exception that holds a token ------------------------------------------
@pytest.fixture(scope="module")
def hooked() -> Iterator[Service]:
    """An embedded app whose authorize hooks fail with the token in the exception's text."""
    with LiveServer("tests.apps.hooked:app", health_path="/realtime/health", name="hooked") as server:
        yield Service(server, server.url + "/realtime", "hooked-secret")


@pytest.mark.live
@pytest.mark.parametrize(
    "how",
    [
        {"params": {"token": HOOK_TOKEN}},
        {"headers": {"Authorization": f"Bearer {HOOK_TOKEN}"}},
        {"headers": {"Cookie": f"impulse_token={HOOK_TOKEN}"}},
    ],
    ids=["query", "bearer", "cookie"],
)
def test_a_subscribe_hook_raising_with_the_token_in_its_message_logs_no_token(
    hooked: Service, how: dict[str, Any]
) -> None:
    log = LogWindow(hooked.server)
    params = {"channel": "hook:boom", **how.get("params", {})}
    response = requests.get(hooked.base, params=params, headers=how.get("headers"), timeout=10)
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error"}
    written = log.text()
    assert "Traceback" in written  # the app's bug is logged, with its traceback
    assert HOOK_TOKEN not in written


@pytest.mark.live
def test_a_push_hook_raising_with_audience_tokens_in_its_message_logs_no_token(hooked: Service) -> None:
    log = LogWindow(hooked.server)
    token = remember(f"audience-{uuid.uuid4().hex}")
    response = hooked.push({"channel": "hook:boom", "payload": 1, "audience": {"tokens": [token]}})
    assert response.status_code == 500
    written = log.text()
    assert "Traceback" in written
    assert token not in written
    assert hooked.secret not in written


# -- the push schema: an unknown key is a 400 that names it -------------------------------------
@pytest.mark.parametrize(
    ("body", "unknown", "allowed"),
    [
        ({"payload": 1, "audience": {"Tokens": ["u-1"]}}, "audience.Tokens", ["tokens", "topic"]),
        ({"payload": 1, "audience": {"tokens": ["u-1"], "topics": "r"}}, "audience.topics", ["tokens", "topic"]),
        ({"payload": 1, "audiance": {"tokens": ["u-1"]}}, "audiance", ["audience", "channel", "payload"]),
        ({"payload": 1, "topic": "room"}, "topic", ["audience", "channel", "payload"]),
    ],
    ids=["audience-Tokens", "audience-topics", "audiance", "top-level-topic"],
)
def test_an_unknown_push_key_is_400_naming_it_and_delivers_nothing(
    service: Service, body: dict[str, Any], unknown: str, allowed: list[str]
) -> None:
    channel = unique("strict")
    with (
        SSEStream(service.base, {"channel": channel}) as stream,
        SSEStream(service.base, {"channel": channel, "token": "u-1"}) as private,
    ):
        response = service.push({"channel": channel, **body})
        assert response.status_code == 400
        answer = response.json()
        assert answer["error"] == "Invalid request body"
        assert repr(unknown.rsplit(".", 1)[-1]) in answer["details"]
        assert unknown.split(".")[0] in answer["details"]
        assert all(key in answer["details"] for key in allowed)
        stream.assert_silent(0.3)
        private.assert_silent(0.1)


def test_an_unknown_key_in_a_batch_item_rejects_the_batch_and_names_the_item(service: Service) -> None:
    channel = unique("strict-batch")
    with SSEStream(service.base, {"channel": channel}) as stream:
        response = service.push([{"channel": channel, "payload": 1}, {"channel": channel, "paylaod": 2}])
        assert response.status_code == 400
        assert response.json()["details"].startswith("[1]: ")
        assert "'paylaod'" in response.json()["details"]
        stream.assert_silent(0.3)


def test_every_allowed_key_is_still_accepted(service: Service) -> None:
    channel = unique("allowed")
    with SSEStream(service.base, {"channel": channel, "token": "u-1", "topic": "r"}) as stream:
        body = {"channel": channel, "payload": 1, "audience": {"tokens": ["u-1"], "topic": "r"}, "idempotencyKey": "k"}
        assert service.push(body).json()["sent"] == 1
        assert stream.messages(1) == [{"channel": channel, "payload": 1}]


# -- resume: both backplanes answer alike --------------------------------------------------------
HISTORY_SIZE = 5


@pytest.fixture(scope="module", params=["memory", "redis"])
def backplane(request: pytest.FixtureRequest) -> Iterator[Service]:
    """The standalone service with a history of 5 messages per channel, on each backplane."""
    env = {"REALTIME_SECRET": SECRET, "IMPULSE_HISTORY_SIZE": str(HISTORY_SIZE)}
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        env["IMPULSE_REDIS_URL"] = redis_server.url
        env["IMPULSE_REDIS_PREFIX"] = unique("resume")
    with LiveServer("wsgi:app", env=env, name=f"resume-{request.param}") as server:
        yield Service(server, server.url + "/", SECRET)


#: (row, the id the client presents from the ids of 8 pushes, whether a gap comes first, the
#: pushes replayed). History holds the last 5 of the 8 pushes: 3..7.
RESUME_TABLE = [
    ("up-to-date", lambda ids: ids[7], False, []),
    ("retained", lambda ids: ids[4], False, [5, 6, 7]),
    ("evicted", lambda ids: ids[0], True, [3, 4, 5, 6, 7]),
    ("unknown-older", lambda ids: "1000-0", True, [3, 4, 5, 6, 7]),
    ("future", lambda ids: "99999999999999-0", True, []),
    ("malformed", lambda ids: "not-an-id", True, []),
    ("malformed-digits", lambda ids: "\u0661\u0662\u0663-\u0660", True, []),
    ("superscript", lambda ids: "²-0", True, []),
]


@pytest.mark.live
@pytest.mark.redis
@pytest.mark.parametrize(
    ("presented", "gap", "replayed"), [row[1:] for row in RESUME_TABLE], ids=[row[0] for row in RESUME_TABLE]
)
def test_both_backplanes_answer_a_resume_alike(
    backplane: Service, presented: Any, gap: bool, replayed: list[int]
) -> None:
    channel = unique("table")
    results = backplane.push([{"channel": channel, "payload": index} for index in range(8)]).json()["results"]
    last_event_id = presented([result["id"] for result in results])
    log = LogWindow(backplane.server)
    # As a query parameter: a header would carry the non-ASCII rows as latin-1 mojibake.
    with SSEStream(backplane.base, {"channel": channel, "lastEventId": last_event_id}) as stream:
        backplane.push({"channel": channel, "payload": "live"})
        if gap:
            event = stream.next_event()
            assert event.event == "gap"
            assert json.loads(event.data) == {"lastEventId": last_event_id}
        assert [m["payload"] for m in stream.messages(len(replayed) + 1)] == [*replayed, "live"]
        stream.assert_silent(0.2)
    log.assert_no_error()
