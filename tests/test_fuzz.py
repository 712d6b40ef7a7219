"""A fuzzer against a live service: random methods, paths, query strings, headers, bodies and
framing, with and without the push secret, over raw sockets.

Whatever arrives, the service answers with a status below 500 (or one of the documented
5xx, see ``_legitimate``), writes no ERROR line to its log, and keeps its worker. The run is
bounded in count (hypothesis' ``max_examples``) and each exchange in time. Anomalies are
collected rather than raised, so that one run lists every kind found, and hypothesis does
not spend minutes shrinking against a live server.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.support import secrets
from tests.support.fleet import record_figure, wait_until, worker_pids
from tests.support.server import LiveServer

pytestmark = pytest.mark.live

PUSH_SECRET = secrets.ROTATING_PUSH_SECRETS[0]
#: A subscriber token the JWT-mode service accepts (the compatible mode takes any string).
VALID_TOKEN = secrets.make_token("fuzz-user", ["c", "chat:*"], ttl=3600)
#: Requests of each kind, per service: well-formed HTTP with random parts, and broken framing.
WELL_FORMED_EXAMPLES = 350
BROKEN_FRAMING_EXAMPLES = 100
#: Longest wait for one answer: far beyond any answer of a healthy service, even a busy one.
ANSWER_TIMEOUT = 15.0
#: Longest run per service: past it, nothing more is sent (a service that stalls on every
#: request must not hold the suite for max_examples times the timeout).
TIME_BUDGET = 180.0
#: An ERROR-level line in gunicorn's error log or Flask's logger, or a traceback.
ERROR_LINE = re.compile(r"\[ERROR\]|\bERROR in |^Traceback \(most recent call last\)", re.MULTILINE)

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No shrinking: anomalies are collected, not raised, so there is nothing to shrink.
    phases=[Phase.explicit, Phase.generate],
    database=None,
)


@dataclass
class Exchange:
    """One raw request and what came back."""

    request: bytes
    status: int | None = None
    body: bytes = b""
    answered: bool = False
    timed_out: bool = False


@dataclass
class Fuzzing:
    server: LiveServer
    sent: int = 0
    findings: dict[str, list[str]] = field(default_factory=dict)
    ends: float = field(default_factory=lambda: time.monotonic() + TIME_BUDGET)

    def out_of_time(self) -> bool:
        if time.monotonic() < self.ends:
            return False
        self.findings["over the time budget"] = [f"stopped after {self.sent} requests and {TIME_BUDGET} s"]
        return True

    def exchange(self, request: bytes, *, finish_sending: bool) -> Exchange:
        """Send ``request``; read the answer's head and, when it has a length, its body.

        ``finish_sending`` closes our side after sending, so that a request whose framing
        promises more bytes than it holds meets the end of the stream rather than a wait.
        """
        self.sent += 1
        exchange = Exchange(request)
        deadline = time.monotonic() + ANSWER_TIMEOUT
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=ANSWER_TIMEOUT) as sock:
            try:
                sock.sendall(request)
                if finish_sending:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may close on garbage before reading it all; its answer still counts
            data = b""
            try:
                while b"\r\n\r\n" not in data and time.monotonic() < deadline:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
                if match:
                    exchange.answered, exchange.status = True, int(match.group(1))
                    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                    if request.startswith(b"HEAD "):
                        length = None  # the length of the body a GET would have had
                    while length and len(body) < int(length.group(1)) and time.monotonic() < deadline:
                        sock.settimeout(max(0.01, deadline - time.monotonic()))
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                    exchange.body = body
                elif data == b"" and time.monotonic() >= deadline:
                    exchange.timed_out = True
            except TimeoutError:
                exchange.timed_out = not exchange.answered
            except OSError:
                pass  # reset by the server: no answer, judged below
        return exchange

    def note(self, kind: str, exchange: Exchange) -> None:
        examples = self.findings.setdefault(kind, [])
        if len(examples) < 2:
            request = exchange.request[:300].replace(PUSH_SECRET.encode(), b"[push secret]")
            request = request.replace(VALID_TOKEN.encode(), b"[token]")
            examples.append(f"{request!r} -> {exchange.status} {exchange.body[:200]!r}")


def _legitimate(exchange: Exchange) -> bool:
    """The 5xx a client may cause: 501 for a transfer coding gunicorn does not implement, 503
    from the connection limit or readiness (both JSON, both with Retry-After)."""
    status = exchange.status or 0
    if status < 500:
        return True
    if status == 501:
        return b"transfer-encoding" in exchange.request.lower()
    if status == 503:
        try:
            error = json.loads(exchange.body).get("error")
        except (ValueError, AttributeError):
            return False
        return error in ("Too many connections", "Not ready", "Service shutting down")
    return False


# -- strategies ------------------------------------------------------------------------------
_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)
_ids = st.sampled_from(["0-0", "1-0", "99999999999999999999-0", "\u00b2-0", "0-\u00b2", "\u0663-0", "-1", "a-b", ""])
_KNOWN_PATHS = (
    "/",
    "/health",
    "/health/",
    "/health/ready",
    "/client.js",
    "/client.d.ts",
    "/static/client.js",
    "/static/client.d.ts",
    "/metrics",
    "/favicon.ico",
    "//",
    "/./health",
    "/%2e%2e/health",
    "/health/../health",
)
_paths = st.one_of(st.sampled_from(_KNOWN_PATHS), st.text(max_size=30).map(lambda text: "/" + quote(text)))
_query_keys = st.one_of(st.sampled_from(["channel", "topic", "token", "lastEventId", "channel[]"]), st.text(max_size=8))
_query_values = st.one_of(st.sampled_from(["c", "chat:1", "", "public:x", VALID_TOKEN]), _ids, st.text(max_size=30))
_authorizations = st.sampled_from(
    [
        f"Bearer {PUSH_SECRET}",
        f"Bearer {VALID_TOKEN}",
        f"Bearer {secrets.HEALTH_TOKEN}",
        secrets.HEALTH_TOKEN,
        PUSH_SECRET,
        f"Bearer {secrets.UNKNOWN_PUSH_SECRET}",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer x",
    ]
)
_headers = st.lists(
    st.one_of(
        st.tuples(st.just("Authorization"), _authorizations),
        st.tuples(st.just("Last-Event-ID"), st.one_of(_ids, _header_text)),
        st.tuples(
            st.just("Content-Type"),
            st.sampled_from(
                ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
            ),
        ),
        st.tuples(
            st.sampled_from(["Origin", "Accept", "Cookie", "Referer", "X-Forwarded-For", "Expect"]), _header_text
        ),
        st.tuples(st.from_regex(r"X-[A-Za-z0-9-]{1,12}", fullmatch=True), _header_text),
    ),
    max_size=6,
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_pushes = st.fixed_dictionaries(
    {"channel": st.one_of(st.sampled_from(["c", "chat:1", ""]), st.text(max_size=20)), "payload": _json_values},
    optional={
        "topic": st.one_of(st.none(), st.text(max_size=10)),
        "audience": st.one_of(
            st.fixed_dictionaries({"tokens": st.lists(st.text(max_size=10), max_size=3)}), _json_values
        ),
        "Audience": _json_values,
    },
)
_bodies = st.one_of(
    st.just(b""),
    _pushes.map(lambda push: json.dumps(push).encode()),
    st.lists(_pushes, max_size=3).map(lambda batch: json.dumps(batch).encode()),
    _json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
)


#: What a request is aimed at, so that random parts reach each endpoint's own checks instead of
#: stopping at the first one: (method, path, whether to name a channel, whether to authenticate).
_aims = st.sampled_from(
    [
        ("GET", "/", True, False),
        ("POST", "/", False, True),
        ("POST", "/", False, False),
        ("GET", "/health", False, False),
        ("GET", "/client.js", False, False),
        (None, None, False, False),
    ]
)
_methods = st.one_of(
    st.sampled_from(["GET", "POST", "OPTIONS", "HEAD", "PUT", "DELETE", "PATCH", "TRACE"]),
    st.from_regex(r"[A-Z]{1,10}", fullmatch=True),
)


@st.composite
def well_formed_requests(draw: st.DrawFn) -> bytes:
    """Valid HTTP/1.1 framing around random methods, targets, headers and bodies."""
    method, path, channel, authenticated = draw(_aims)
    method, path = method or draw(_methods), path or draw(_paths)
    pairs = [("channel", draw(st.sampled_from(["c", "chat:1"])))] if channel else []
    if channel and draw(st.booleans()):
        pairs.append(("lastEventId", draw(_ids)))
    pairs += draw(st.lists(st.tuples(_query_keys, _query_values), max_size=4))
    query = urlencode(pairs, quote_via=quote)
    target = path + ("?" + query if query else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if authenticated:
        lines.append(f"Authorization: Bearer {PUSH_SECRET}")
    lines += [f"{name}: {value}" for name, value in draw(_headers)]
    body = draw(_bodies)
    if draw(st.booleans()) and body:
        lines.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return b"\r\n".join(_header_bytes(line) for line in lines) + b"\r\n\r\n" + payload


def _header_bytes(line: str) -> bytes:
    """A header line as latin-1 where it can be (a raw ``\\xb2``), else as UTF-8."""
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        return line.encode()


_PUSH_HEAD = f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {PUSH_SECRET}\r\n".encode()
_bad_chunk_sizes = st.one_of(
    st.sampled_from(["-5", "0x5", "zz", "5;\rx", "5 ;x", " 5", "ffffffffffffffffffff", "", "5\n", "+5"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6),
)
_bad_lengths = st.sampled_from(["-1", "abc", "1,1", "99999999999999999999", "  ", "0x10", "1e3", "+5"])
_codings = st.sampled_from(
    ["xchunked", "gzip", "chunked, gzip", "identity", "chunked;x", "chunked, chunked", "Chunked"]
)


@st.composite
def broken_framing(draw: st.DrawFn) -> bytes:
    """Requests whose framing is wrong: bad chunk sizes and codings, bad or lying lengths,
    a body cut short, garbage request lines."""
    body = b'{"channel": "c", "payload": 1}'
    kind = draw(st.sampled_from(["chunk size", "cut chunk", "length", "short body", "coding", "both", "line"]))
    if kind == "chunk size":
        size = draw(_bad_chunk_sizes).encode()
        return _PUSH_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\n" + body + b"\r\n0\r\n\r\n"
    if kind == "cut chunk":
        return _PUSH_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + body[: draw(st.integers(0, 20))]
    if kind == "length":
        return _PUSH_HEAD + f"Content-Length: {draw(_bad_lengths)}\r\n\r\n".encode() + body
    if kind == "short body":
        return _PUSH_HEAD + f"Content-Length: {len(body) + draw(st.integers(1, 1000))}\r\n\r\n".encode() + body
    if kind == "coding":
        return _PUSH_HEAD + f"Transfer-Encoding: {draw(_codings)}\r\n\r\n".encode() + body
    if kind == "both":
        return _PUSH_HEAD + f"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode() + body
    garbage = draw(
        st.one_of(
            st.binary(max_size=80),
            st.sampled_from(
                [
                    b"GET\r\n",
                    b"GET / HTTP/9.9\r\n",
                    b"get / HTTP/1.1\r\n",
                    b"GET  / HTTP/1.1\r\n",
                    b"GET /\x00 HTTP/1.1\r\n",
                    b"GET / HTTP/1.1 extra\r\n",
                    b"\r\n\r\nGET / HTTP/1.1\r\n",
                    b"GET http://evil/ HTTP/1.1\r\n",
                    b"GET * HTTP/1.1\r\n",
                    b"PRI * HTTP/2.0\r\n",
                ]
            ),
        )
    )
    return garbage + b"Host: 127.0.0.1\r\n\r\n"


def _kind(request: bytes) -> str:
    """What a well-formed request was, to group findings: its method and path."""
    method, _, rest = request.partition(b" ")
    path = rest.partition(b" ")[0].partition(b"?")[0].decode("latin-1")
    return f"{method.decode('latin-1')} {path if path in _KNOWN_PATHS else '<random path>'}"


def _error_lines(log: str) -> list[str]:
    """Each distinct ERROR message in ``log``, and one example of each kind of exception that
    ends a traceback."""
    found: dict[str, None] = {}
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if not ERROR_LINE.search(line):
            continue
        if line.startswith("Traceback"):
            end = next((later for later in lines[index + 1 :] if later and not later.startswith(" ")), "")
            kind = end.partition(":")[0]
            if not any(known.startswith(f"traceback: {kind}:") for known in found):
                found[f"traceback: {end[:200]}"] = None
        else:
            found[re.sub(r"^\[[^]]*\] (\[\d+\] )?", "", line)[:200]] = None
    return list(found)


# -- the test --------------------------------------------------------------------------------
#: The standalone service in both modes: tokens unchecked (compatible), and JWT.
MODES = {
    "compatible": {},
    "jwt": {"REALTIME_JWT_SECRET": secrets.JWT_SECRET, "IMPULSE_PUBLIC_CHANNELS": "public:*"},
}


@pytest.fixture(params=list(MODES))
def fuzzed(request: pytest.FixtureRequest) -> Iterator[Fuzzing]:
    env = {"REALTIME_SECRET": PUSH_SECRET, "HEALTH_CHECK_TOKEN": secrets.HEALTH_TOKEN, **MODES[request.param]}
    with LiveServer("wsgi:app", env=env, name=f"fuzz-{request.param}") as server:
        yield Fuzzing(server)


def test_no_input_reaches_a_5xx_an_error_log_line_or_a_dead_worker(fuzzed: Fuzzing) -> None:
    server = fuzzed.server
    workers = worker_pids(server)
    log_start = len(server.log())
    fuzzed.ends = time.monotonic() + TIME_BUDGET

    @settings(FUZZ, max_examples=WELL_FORMED_EXAMPLES)
    @given(well_formed_requests())
    @example(b"GET /?channel=c&lastEventId=%C2%B2-0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    @example(b"GET /?channel=c HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xb2-0\r\nConnection: close\r\n\r\n")
    def well_formed(request: bytes) -> None:
        judge(request, well_formed=True)

    @settings(FUZZ, max_examples=BROKEN_FRAMING_EXAMPLES)
    @given(broken_framing())
    @example(_PUSH_HEAD + b"Transfer-Encoding: xchunked\r\n\r\n{}")
    def broken(request: bytes) -> None:
        judge(request, well_formed=False)

    def judge(request: bytes, *, well_formed: bool) -> None:
        if fuzzed.out_of_time():
            return
        exchange = fuzzed.exchange(request, finish_sending=not well_formed)
        kind = _kind(exchange.request) if well_formed else "broken framing"
        if exchange.timed_out:
            fuzzed.note(f"no answer within {ANSWER_TIMEOUT} s: {kind}", exchange)
        elif not exchange.answered and well_formed:
            fuzzed.note(f"closed without an answer: {kind}", exchange)
        elif not _legitimate(exchange):
            fuzzed.note(f"status {exchange.status}: {kind}", exchange)

    well_formed()
    broken()
    # A last request, after which every line the fuzzing caused has been written.
    marker = f"/fuzz-done-{uuid.uuid4().hex}"
    fuzzed.exchange(f"GET {marker} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), finish_sending=False)
    wait_until(lambda: marker in server.log(), timeout=10, what="the last access line")
    errors = _error_lines(server.log()[log_start:])
    if errors:
        fuzzed.findings["ERROR lines in the log"] = errors
    if worker_pids(server) != workers:
        fuzzed.findings["worker replaced"] = [f"{workers} -> {worker_pids(server)}"]
    record_figure("fuzz", server=server.log_path.name, requests=fuzzed.sent, findings=sorted(fuzzed.findings))
    assert fuzzed.sent >= WELL_FORMED_EXAMPLES + BROKEN_FRAMING_EXAMPLES
    assert not fuzzed.findings, json.dumps(fuzzed.findings, indent=1)
