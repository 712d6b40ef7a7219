"""The attack suite (SECURITY.md lists each case with its expected outcome), against live
gunicorn + gevent servers. Every case must fail safely, with a JSON answer that echoes
nothing secret, and the service must keep serving everyone else: after every test, and in
the middle of the floods, a fresh client from an address of its own receives a push
(``assert_serving``).
"""

from __future__ import annotations

import itertools
import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.support import secrets, streams
from tests.support.redis import RedisServer
from tests.support.secrets import handmade_token, make_token, remember
from tests.support.server import LiveServer
from tests.support.streams import SSEStream

pytestmark = [pytest.mark.live, pytest.mark.redis]

MAX_STREAMS_PER_IP = 6
MAX_STREAMS_PER_TOKEN = 3
PUSH_RATE_LIMIT = 100  # messages per second per push secret
ALLOWED_ORIGIN = "https://app.example.com"
# Every loopback address is this machine: each client of the suite takes its own.
_addresses = (f"127.0.{high}.{low}" for high, low in itertools.product(range(1, 250), range(2, 250)))


def fresh_address() -> str:
    return next(_addresses)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Guarded:
    """A server with every protection on, and how to reach it."""

    server: LiveServer
    base: str
    push_secret: str

    def push(self, body: Any, secret: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {secret or self.push_secret}", **kwargs.pop("headers", {})}
        return requests.post(self.base, json=body, headers=headers, timeout=10, **kwargs)

    def stream(self, params: dict[str, Any] | list[tuple[str, str]], **kwargs: Any) -> SSEStream:
        kwargs.setdefault("source_address", fresh_address())
        return SSEStream(self.base, params, **kwargs)


@pytest.fixture(scope="module")
def guarded() -> Iterator[Guarded]:
    """The standalone service in JWT mode, configured the way SECURITY.md's checklist says,
    with small limits so that the floods stay small."""
    env = {
        "REALTIME_SECRET": secrets.ROTATING_PUSH_SECRETS[0],
        "REALTIME_SECRETS": secrets.ROTATING_PUSH_SECRETS[1],
        "REALTIME_JWT_SECRET": secrets.JWT_SECRET,
        "IMPULSE_JWT_PUBLIC_KEY": secrets.RSA_PUBLIC_PEM + secrets.EC_PUBLIC_PEM,
        "IMPULSE_JWT_LEEWAY": "0",
        "IMPULSE_PUBLIC_CHANNELS": "public:*",
        # The suite's clients take loopback addresses other than 127.0.0.1 (exempt by default).
        "IMPULSE_MAX_STREAMS_PER_IP": str(MAX_STREAMS_PER_IP),
        "IMPULSE_MAX_STREAMS_PER_TOKEN": str(MAX_STREAMS_PER_TOKEN),
        "IMPULSE_PUSH_RATE_LIMIT": str(PUSH_RATE_LIMIT),
        "IMPULSE_QUEUE_MAX_BYTES": str(256 * 1024),
        "IMPULSE_HEARTBEAT_INTERVAL": "1",
        "HEALTH_CHECK_TOKEN": secrets.HEALTH_TOKEN,
        "CORS_ORIGIN": f"{ALLOWED_ORIGIN},https://*.trusted.example",
        "CORS_CREDENTIALS": "true",
    }
    # Debug logging, and an access log that prints credentials' atoms: what the redaction
    # must hold against is the most a deployment could log.
    access_format = '%(h)s "%(r)s" %(s)s "%(f)s" auth="%({authorization}i)s" cookie="%({cookie}i)s" q="%(q)s"'
    extra = ["--log-level", "debug", "--keep-alive", "2", "--access-logformat", access_format]
    with LiveServer("wsgi:app", env=env, extra_args=extra, name="security", access_log=True) as server:
        yield Guarded(server, server.url + "/", secrets.ROTATING_PUSH_SECRETS[0])


@pytest.fixture(autouse=True)
def still_serving_afterwards(guarded: Guarded) -> Iterator[None]:
    """After every case, attack or not, a normal subscriber still receives."""
    yield
    assert_serving(guarded)


def assert_serving(service: Guarded) -> None:
    """A new subscriber, from an address of its own, with a valid token, still receives."""
    channel = unique("chat:ok-")
    token = make_token(unique("user-"), ["chat:*"])
    with service.stream({"channel": channel, "token": token}) as stream:
        assert stream.status == 200
        assert service.push({"channel": channel, "payload": "still serving"}).json()["sent"] == 1
        assert stream.messages(1) == [{"channel": channel, "payload": "still serving"}]


def refused(stream: SSEStream, status: int) -> dict[str, Any]:
    """The JSON refusal on ``stream``, checked for status and for echoing no token."""
    assert stream.status == status
    assert stream.headers["content-type"] == "application/json"
    body = stream.read_json()
    assert isinstance(body["error"], str)
    text = json.dumps(body)
    assert not any(value in text for value in secrets.secret_values()), body
    return body  # type: ignore[no-any-return]


def raw_exchange(service: Guarded, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    return streams.raw_exchange(service.server.port, request, timeout)


# -- tokens ---------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
def test_valid_token_of_each_accepted_algorithm_receives_pushes_for_its_subject(
    guarded: Guarded, algorithm: str
) -> None:
    channel = unique("chat:")
    subject = unique("user-")
    with guarded.stream({"channel": channel, "token": make_token(subject, ["chat:*"], algorithm=algorithm)}) as own:
        other = make_token(unique("user-"), ["chat:*"])
        with guarded.stream({"channel": channel, "token": other}) as bystander:
            assert own.status == bystander.status == 200
            # audience.tokens names subjects in JWT mode: only the subject's stream gets it.
            body = {"channel": channel, "payload": "private", "audience": {"tokens": [subject]}}
            assert guarded.push(body).json()["sent"] == 1
            assert guarded.push({"channel": channel, "payload": "all"}).json()["sent"] == 2
            assert [m["payload"] for m in own.messages(2)] == ["private", "all"]
            assert [m["payload"] for m in bystander.messages(1)] == ["all"]


@pytest.mark.parametrize("source", ["query", "authorization", "cookie"])
def test_token_is_accepted_from_query_authorization_header_or_cookie(guarded: Guarded, source: str) -> None:
    channel = unique("chat:")
    token = make_token(unique("user-"), ["chat:*"])
    params: dict[str, str] = {"channel": channel}
    headers: dict[str, str] = {}
    if source == "query":
        params["token"] = token
    elif source == "authorization":
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers["Cookie"] = f"theme=dark; impulse_token={token}"
    with guarded.stream(params, headers=headers) as stream:
        assert stream.status == 200
        assert guarded.push({"channel": channel, "payload": source}).json()["sent"] == 1
        assert stream.messages(1)[0]["payload"] == source


def _bad_tokens() -> dict[str, tuple[str, int, str]]:
    """Each attack token, the status it must get, and the error it must be told."""
    now = int(time.time())
    claims = {"sub": "mallory", "channels": ["*"], "iat": now, "exp": now + 600}
    valid = make_token("mallory", ["chat:public"])
    header, payload, signature = valid.split(".")
    widened = secrets.b64url(json.dumps({**claims, "channels": ["*"]}).encode())
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "wrong key": (make_token("mallory", ["*"], key=secrets.FOREIGN_JWT_SECRET), 401, "Invalid token"),
        "expired": (make_token("mallory", ["*"], iat=now - 7200, exp=now - 3600), 401, "Token expired"),
        "not yet valid (nbf)": (make_token("mallory", ["*"], nbf=now + 3600), 401, "Token not yet valid"),
        "alg none": (handmade_token({"alg": "none", "typ": "JWT"}, claims), 401, "Invalid token"),
        "alg None, capitalised": (handmade_token({"alg": "None", "typ": "JWT"}, claims), 401, "Invalid token"),
        "HS256 signed with the RSA public key (algorithm confusion)": (
            handmade_token({"alg": "HS256", "typ": "JWT"}, claims, secrets.RSA_PUBLIC_PEM.encode()),
            401,
            "Invalid token",
        ),
        "HS512 (algorithm not accepted)": (
            make_token("mallory", ["*"], key=secrets.JWT_SECRET, algorithm="HS512"),
            401,
            "Invalid token",
        ),
        "RS256 signed by a foreign key": (
            make_token("mallory", ["*"], key=secrets.FOREIGN_RSA_PRIVATE_PEM, algorithm="RS256"),
            401,
            "Invalid token",
        ),
        "forged signature": (remember(f"{header}.{payload}.{flipped}"), 401, "Invalid token"),
        "payload widened, signature kept": (remember(f"{header}.{widened}.{signature}"), 401, "Invalid token"),
        "no exp claim": (make_token("mallory", ["*"], exp=None), 401, "Invalid token"),
        "not a JWT": (remember(secrets.PLAIN_TOKEN), 401, "Invalid token"),
    }


BAD_TOKENS = _bad_tokens()


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_token_is_401_and_opens_nothing(guarded: Guarded, case: str) -> None:
    token, status, error = BAD_TOKENS[case]
    with guarded.stream({"channel": "chat:public", "token": token}) as stream:
        body = refused(stream, status)
    assert body == {"error": error, "check": "token"}  # no details outside debug mode
    assert stream.headers["www-authenticate"].startswith("Bearer")


def test_token_for_other_channels_is_403_naming_the_channel(guarded: Guarded) -> None:
    token = make_token(unique("user-"), ["chat:*"])
    with guarded.stream({"channel": "admin:audit", "token": token}) as stream:
        assert refused(stream, 403) == {"error": "Forbidden", "check": "channel", "channel": "admin:audit"}
    # One forbidden channel refuses the whole multi-channel stream.
    with guarded.stream([("channel", "chat:a"), ("channel", "admin:audit"), ("token", token)]) as stream:
        assert refused(stream, 403)["channel"] == "admin:audit"


def test_token_for_other_topics_is_403(guarded: Guarded) -> None:
    token = make_token(unique("user-"), ["chat:*"], topics=["room-1", "team-*"])
    for topic, status in [("room-1", 200), ("team-red", 200), ("room-2", 403)]:
        with guarded.stream({"channel": "chat:x", "topic": topic, "token": token}) as stream:
            assert stream.status == status, topic
            if status == 403:
                assert refused(stream, 403)["check"] == "topic"


def test_private_channel_without_token_is_401_and_public_channel_is_open(guarded: Guarded) -> None:
    with guarded.stream({"channel": "chat:x"}) as stream:
        assert refused(stream, 401) == {"error": "Token required", "check": "token", "channel": "chat:x"}
    with guarded.stream({"channel": unique("public:")}) as stream:
        assert stream.status == 200


def test_stream_closes_when_its_token_expires_and_cannot_reopen(guarded: Guarded) -> None:
    channel = unique("chat:")
    token = make_token(unique("user-"), ["chat:*"], ttl=2)
    with guarded.stream({"channel": channel, "token": token}) as stream:
        assert stream.status == 200
        stream.wait_closed(timeout=20)
        assert stream.closed
    with guarded.stream({"channel": channel, "token": token}) as again:
        assert refused(again, 401)["error"] == "Token expired"


def test_replay_for_a_channel_the_token_may_not_read_is_403_without_data(guarded: Guarded) -> None:
    secret_channel = unique("admin:")
    admin = make_token("admin", ["admin:*"])
    with guarded.stream({"channel": secret_channel, "token": admin}) as stream:
        first = guarded.push({"channel": secret_channel, "payload": "before"}).json()["id"]
        guarded.push({"channel": secret_channel, "payload": "classified"})
        assert len(stream.messages(2)) == 2
    snoop = make_token(unique("user-"), ["chat:*"])
    for how in ({"lastEventId": first}, {}):
        headers = {} if how else {"Last-Event-ID": first}
        with guarded.stream({"channel": secret_channel, "token": snoop, **how}, headers=headers) as stream:
            body = refused(stream, 403)
            assert "classified" not in json.dumps(body)


def test_replay_gives_a_subscriber_only_the_pushes_addressed_to_it(guarded: Guarded) -> None:
    channel = unique("chat:")
    first = guarded.push({"channel": channel, "payload": "start"}).json()["id"]
    guarded.push({"channel": channel, "payload": "for alice", "audience": {"tokens": ["alice"]}})
    guarded.push({"channel": channel, "payload": "for everyone"})
    bob = make_token("bob", ["chat:*"])
    with guarded.stream({"channel": channel, "token": bob, "lastEventId": first}) as stream:
        assert [m["payload"] for m in stream.messages(1)] == ["for everyone"]
        stream.assert_silent(0.5)


# -- injection --------------------------------------------------------------------------------
BREAKS = ["\r\n", "\n", "\r", "\x00", "\u2028", "\x1b", "\r\n\r\ndata: injected"]


@pytest.mark.parametrize("field", ["channel", "topic", "token"])
@pytest.mark.parametrize("injected", BREAKS)
def test_line_breaks_and_control_characters_in_subscription_are_400(
    guarded: Guarded, field: str, injected: str
) -> None:
    params = {"channel": "public:x", field: f"evil{injected}: 1"}
    with guarded.stream(params) as stream:
        body = refused(stream, 400)
    assert "control characters" in body["details"]
    assert "injected" not in json.dumps(body)


@pytest.mark.parametrize("injected", BREAKS)
def test_line_breaks_in_pushed_channel_topic_or_tokens_are_400(guarded: Guarded, injected: str) -> None:
    for body in (
        {"channel": f"public:{injected}", "payload": 1},
        {"channel": "public:x", "payload": 1, "audience": {"topic": f"t{injected}"}},
        {"channel": "public:x", "payload": 1, "audience": {"tokens": [f"t{injected}"]}},
    ):
        answer = guarded.push(body)
        assert answer.status_code == 400
        assert "control characters" in answer.json()["details"]


@pytest.mark.parametrize(
    "payload",
    [
        "line\r\nbreaks\rand\nmore",
        '\n\ndata: {"channel":"public:evil","payload":"forged"}\n\n',
        "id: 999-0\nevent: gap\nretry: 1\n\n",
        ": comment\r\n\r\n",
        "\u2028\u2029\x00\x1b[31m",
        {"nested\r\nkey": ["\n\n", {"data:": "\r"}]},
    ],
)
def test_payload_with_line_breaks_and_sse_fields_arrives_intact_in_one_event(guarded: Guarded, payload: Any) -> None:
    channel = unique("public:")
    with guarded.stream({"channel": channel}) as stream:
        guarded.push({"channel": channel, "payload": payload})
        guarded.push({"channel": channel, "payload": "next"})
        first, second = stream.events(2)
        assert first.event == second.event == "message"
        assert json.loads(first.data) == {"channel": channel, "payload": payload}
        assert json.loads(second.data) == {"channel": channel, "payload": "next"}


def test_crlf_in_last_event_id_cannot_forge_an_event(guarded: Guarded) -> None:
    channel = unique("public:")
    with guarded.stream({"channel": channel, "lastEventId": "1-0\r\n\r\ndata: forged"}) as stream:
        gap = stream.next_event()
        assert gap.event == "gap"
        assert json.loads(gap.data) == {"lastEventId": "1-0\r\n\r\ndata: forged"}
        guarded.push({"channel": channel, "payload": "real"})
        assert stream.messages(1) == [{"channel": channel, "payload": "real"}]


def raw_refusal(guarded: Guarded, request: str, status: int) -> bytes:
    """The body of gunicorn's refusal of a raw ``request``, checked to be JSON with ``status``."""
    answered, headers, body = raw_exchange(guarded, request.encode())
    assert answered == status
    assert headers["content-type"] == "application/json"
    return body


def test_raw_control_characters_in_a_header_are_a_json_400_that_echoes_nothing(guarded: Guarded) -> None:
    token = remember(secrets.PLAIN_TOKEN + "-raw")
    request = f"GET /?channel=public:x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\x00\x7f\r\n\r\n"
    body = raw_refusal(guarded, request, 400)
    assert json.loads(body) == {"error": "Bad Request"}


# -- sizes ------------------------------------------------------------------------------------------
def test_query_string_over_the_app_limit_is_414_json(guarded: Guarded) -> None:
    with guarded.stream({"channel": "public:x", "pad": "x" * 7000}) as stream:
        body = refused(stream, 414)
    assert body["error"] == "Query string too long"


def test_request_line_over_gunicorn_limit_is_414_json_that_echoes_nothing(guarded: Guarded) -> None:
    token = remember(secrets.PLAIN_TOKEN + "-long")
    request = f"GET /?channel=public:x&token={token}&pad={'x' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n"
    body = raw_refusal(guarded, request, 414)
    assert json.loads(body)["error"] == "URI Too Long"
    assert token.encode() not in body


@pytest.mark.parametrize("shape", ["one huge header", "too many headers"])
def test_oversized_headers_are_431_json(guarded: Guarded, shape: str) -> None:
    if shape == "one huge header":
        extra = f"X-Pad: {'x' * 9000}\r\n"
    else:
        extra = "".join(f"X-Pad-{i}: x\r\n" for i in range(150))
    body = raw_refusal(guarded, f"GET /?channel=public:x HTTP/1.1\r\nHost: x\r\n{extra}\r\n", 431)
    assert json.loads(body)["error"] == "Request Header Fields Too Large"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_over_the_limit_is_413(guarded: Guarded, framing: str) -> None:
    body = json.dumps({"channel": "public:x", "payload": "x" * (2 * 1024 * 1024)}).encode()
    data: Any = body if framing == "content-length" else iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    answer = requests.post(
        guarded.base, data=data, headers={"Authorization": f"Bearer {guarded.push_secret}"}, timeout=20
    )
    assert answer.status_code == 413
    assert answer.json()["error"] == "Payload too large"


# -- slow and idle clients ----------------------------------------------------------------------------
def test_connections_that_never_finish_their_headers_are_dropped_and_block_no_one(guarded: Guarded) -> None:
    sockets = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", guarded.server.port), timeout=20)
            sock.sendall(b"GET /?channel=public:x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            sockets.append(sock)
        assert_serving(guarded)
        # gunicorn gives a request keepalive (here 2 s) to arrive whole; then it hangs up.
        for sock in sockets:
            assert sock.recv(65536) == b""
    finally:
        for sock in sockets:
            sock.close()


def test_streams_that_never_read_are_cut_off_and_others_receive_everything(guarded: Guarded) -> None:
    channel = unique("public:")
    stalled = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(20)
            sock.connect(("127.0.0.1", guarded.server.port))
            sock.sendall(f"GET /?channel={channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stalled.append(sock)
        with guarded.stream({"channel": channel}) as reader:
            # Let the stalled streams open before pushing.
            deadline = time.monotonic() + 10
            while guarded.push({"channel": channel, "payload": "probe"}).json()["sent"] < 4:
                assert time.monotonic() < deadline, "the stalled streams never opened"
                time.sleep(0.05)
            # More than the kernel buffers of the stalled sockets hold (the server's send
            # buffer grows to 4 MiB), pushed one at a time while the healthy reader keeps up.
            chunk = "x" * 128 * 1024
            for index in range(48):
                guarded.push({"channel": channel, "payload": [index, chunk]})
                message = reader.messages(1, timeout=30)[0]
                while message["payload"] == "probe":
                    message = reader.messages(1, timeout=30)[0]
                assert message["payload"][0] == index
        # Each stalled stream was closed: reading what the kernel still holds ends in EOF, or
        # in a reset (the server aborts a connection whose writes stalled: data it could not
        # send is discarded, and the peer learns of it by RST). Either is a stream cut off.
        deadline = time.monotonic() + 30
        for sock in stalled:
            try:
                while sock.recv(1 << 20):
                    assert time.monotonic() < deadline, "a stream that never read was never closed"
            except ConnectionResetError:
                pass
    finally:
        for sock in stalled:
            sock.close()


# -- floods -----------------------------------------------------------------------------------------
def test_streams_past_the_per_address_limit_are_429_with_retry_after(guarded: Guarded) -> None:
    attacker = fresh_address()
    streams = [
        guarded.stream({"channel": unique("public:")}, source_address=attacker) for _ in range(MAX_STREAMS_PER_IP)
    ]
    try:
        assert [stream.status for stream in streams] == [200] * MAX_STREAMS_PER_IP
        with guarded.stream({"channel": unique("public:")}, source_address=attacker) as extra:
            body = refused(extra, 429)
            assert body["check"] == "streams_per_ip"
            assert int(extra.headers["retry-after"]) > 0
        assert_serving(guarded)
        # Closing a stream gives its place back.
        streams.pop().close()
        deadline = time.monotonic() + 10
        while True:
            with guarded.stream({"channel": unique("public:")}, source_address=attacker) as retry:
                if retry.status == 200:
                    break
            assert time.monotonic() < deadline, "a closed stream never gave its place back"
            time.sleep(0.1)
    finally:
        for stream in streams:
            stream.close()


def test_streams_past_the_per_token_limit_are_429_from_any_address(guarded: Guarded) -> None:
    token = make_token(unique("user-"), ["chat:*"])
    streams = [guarded.stream({"channel": unique("chat:"), "token": token}) for _ in range(MAX_STREAMS_PER_TOKEN)]
    try:
        assert [stream.status for stream in streams] == [200] * MAX_STREAMS_PER_TOKEN
        with guarded.stream({"channel": unique("chat:"), "token": token}) as extra:
            assert refused(extra, 429)["check"] == "streams_per_token"
        assert_serving(guarded)
    finally:
        for stream in streams:
            stream.close()


# -- publishers ---------------------------------------------------------------------------------------
def test_every_rotated_push_secret_is_accepted_and_nothing_else(guarded: Guarded) -> None:
    channel = unique("public:")
    for secret in secrets.ROTATING_PUSH_SECRETS:
        assert guarded.push({"channel": channel, "payload": 1}, secret=secret).status_code == 200
    current = secrets.ROTATING_PUSH_SECRETS[0]
    for secret in (secrets.UNKNOWN_PUSH_SECRET, current[:-1], current + "x", current.upper()):
        answer = guarded.push({"channel": channel, "payload": 1}, secret=secret)
        assert answer.status_code == 403
        assert answer.json() == {"error": "Invalid token"}
    assert requests.post(guarded.base, json={"channel": channel}, timeout=10).status_code == 401


def test_push_flood_past_the_rate_limit_is_429_and_other_publishers_go_on(guarded: Guarded) -> None:
    flooder = secrets.ROTATING_PUSH_SECRETS[1]  # every other test pushes with the first secret
    channel = unique("public:")
    with guarded.stream({"channel": channel}) as stream:
        # A batch of 1,000 messages costs 1,000: admitted, it leaves this secret 9 s in debt.
        batch = [{"channel": channel, "payload": index} for index in range(10 * PUSH_RATE_LIMIT)]
        assert guarded.push(batch, secret=flooder).json()["sent"] == 10 * PUSH_RATE_LIMIT
        for _ in range(20):
            answer = guarded.push({"channel": channel, "payload": "flood"}, secret=flooder)
            assert answer.status_code == 429
            assert answer.json()["error"] == "Too many requests"
            assert int(answer.headers["Retry-After"]) >= 1
        assert [m["payload"] for m in stream.messages(10 * PUSH_RATE_LIMIT)] == list(range(10 * PUSH_RATE_LIMIT))
        # The other secret is its own publisher, and none of the refused pushes went out.
        assert guarded.push({"channel": channel, "payload": "other publisher"}).json()["sent"] == 1
        assert stream.messages(1)[0]["payload"] == "other publisher"
        stream.assert_silent(0.3)


# -- CORS -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://app.example.com.evil.net",
        "http://app.example.com",
        "https://trusted.example",
        "https://a.trusted.example.evil.net",
        "null",
    ],
)
def test_disallowed_origin_gets_no_cors_headers_on_stream_push_preflight_or_error(
    guarded: Guarded, origin: str
) -> None:
    with guarded.stream({"channel": unique("public:")}, headers={"Origin": origin}) as stream:
        assert stream.status == 200
        assert not any(name.startswith("access-control-") for name in stream.headers)
    answers = [
        requests.options(guarded.base, headers={"Origin": origin, "Access-Control-Request-Method": "POST"}, timeout=10),
        guarded.push({"channel": "public:x", "payload": 1}, headers={"Origin": origin}),
        requests.get(guarded.base, params={"channel": "chat:x"}, headers={"Origin": origin}, timeout=10),
    ]
    for answer in answers:
        assert not any(name.lower().startswith("access-control-") for name in answer.headers), answer.headers


@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, "https://eu.app.trusted.example", "HTTPS://APP.EXAMPLE.COM"])
def test_allowed_origin_with_credentials_is_named_never_star(guarded: Guarded, origin: str) -> None:
    with guarded.stream({"channel": unique("public:")}, headers={"Origin": origin}) as stream:
        assert stream.headers["access-control-allow-origin"] == origin
        assert stream.headers["access-control-allow-credentials"] == "true"
        assert "origin" in stream.headers["vary"].lower()
    preflight = requests.options(
        guarded.base, headers={"Origin": origin, "Access-Control-Request-Method": "GET"}, timeout=10
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    denied = requests.get(guarded.base, params={"channel": "chat:x"}, headers={"Origin": origin}, timeout=10)
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == origin


def test_request_without_origin_gets_no_cors_headers_when_origins_are_listed(guarded: Guarded) -> None:
    with guarded.stream({"channel": unique("public:")}) as stream:
        assert "access-control-allow-origin" not in stream.headers


# -- leaks ---------------------------------------------------------------------------------------------
def test_health_answers_only_with_its_token_and_shows_no_token(guarded: Guarded) -> None:
    token = make_token(unique("user-"), ["chat:*"])
    with guarded.stream({"channel": unique("chat:"), "token": token}):
        health = requests.get(guarded.server.url + "/health", params={"token": secrets.HEALTH_TOKEN}, timeout=10)
        assert health.status_code == 200
        assert not any(value in health.text for value in secrets.secret_values())
        assert requests.get(guarded.server.url + "/health", timeout=10).status_code == 401


@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("Authorization: Bearer", 200),
        ("?token=", 200),
        ("Authorization without a scheme", 401),
        ("Authorization: Basic", 401),
        ("Authorization: bearer, lower case", 401),
    ],
)
def test_health_token_is_accepted_only_as_bearer_or_query(guarded: Guarded, how: str, status: int) -> None:
    token = secrets.HEALTH_TOKEN
    headers = {
        "Authorization: Bearer": {"Authorization": f"Bearer {token}"},
        "Authorization without a scheme": {"Authorization": token},
        "Authorization: Basic": {"Authorization": f"Basic {token}"},
        "Authorization: bearer, lower case": {"Authorization": f"bearer {token}"},
    }.get(how, {})
    params = {"token": token} if how == "?token=" else {}
    health = requests.get(guarded.server.url + "/health", headers=headers, params=params, timeout=10)
    assert health.status_code == status
    if status == 401:
        assert health.json() == {"error": "Health check token required"}


def test_access_and_error_logs_hold_no_token_cookie_or_secret(guarded: Guarded) -> None:
    """Checked here, on this server's log while it runs; the session's last check greps every log."""
    token = make_token(unique("user-"), ["chat:*"])
    marker = unique("marker-")
    with guarded.stream({"channel": f"chat:{marker}", "token": token}) as stream:
        assert stream.status == 200
    with guarded.stream({"channel": f"chat:{marker}"}, headers={"Authorization": f"Bearer {token}"}) as stream:
        assert stream.status == 200
    with guarded.stream({"channel": f"chat:{marker}"}, headers={"Cookie": f"impulse_token={token}"}) as stream:
        assert stream.status == 200
    guarded.push({"channel": f"public:{marker}", "payload": 1})
    referer = f"https://app.example.com/page?token={token}"
    requests.get(
        guarded.base, params={"channel": f"public:{marker}", "token": "x"}, headers={"Referer": referer}, timeout=10
    )
    deadline = time.monotonic() + 10
    while guarded.server.log().count(marker) < 5:
        assert time.monotonic() < deadline, "the access lines never reached the log"
        time.sleep(0.1)
    lines = [line for line in guarded.server.log().splitlines() if marker in line]
    assert all(value not in line for line in lines for value in secrets.secret_values())
    assert any('auth="[redacted]"' in line for line in lines)
    assert any('cookie="[redacted]"' in line for line in lines)
    assert any("token=[redacted]" in line for line in lines)


def test_redis_holds_neither_tokens_nor_subjects_in_clear(redis_server: RedisServer) -> None:
    """JWT mode over the Redis backplane: what crosses Redis and stays in its history is keyed
    hashes of subjects, never a token, a signature or a subject."""
    env = {
        "REALTIME_SECRET": secrets.ROTATING_PUSH_SECRETS[0],
        "REALTIME_JWT_SECRET": secrets.JWT_SECRET,
        "REDIS_URL": redis_server.url,
        "IMPULSE_TOKEN_HASH_KEY": secrets.TOKEN_HASH_KEY,
    }
    subject, channel = unique("subject-"), unique("chat:")
    token = make_token(subject, ["chat:*"])
    with (
        LiveServer("wsgi:app", env=env, name="security-redis") as server,
        SSEStream(server.url + "/", {"channel": channel, "token": token}) as stream,
    ):
        body = {"channel": channel, "payload": "for one", "audience": {"tokens": [subject]}}
        headers = {"Authorization": f"Bearer {secrets.ROTATING_PUSH_SECRETS[0]}"}
        assert requests.post(server.url + "/", json=body, headers=headers, timeout=10).json()["sent"] == 1
        assert stream.messages(1) == [{"channel": channel, "payload": "for one"}]
    client = redis_server.client()
    try:
        stored = b"".join(client.dump(key) or b"" for key in client.keys("*"))
    finally:
        client.close()
    assert b"for one" in stored  # the history is there, so the search below means something
    for value in (token, token.rsplit(".", 1)[1], subject, secrets.JWT_SECRET, secrets.TOKEN_HASH_KEY):
        assert value.encode() not in stored
