"""Authorization hooks and the access settings of an embedded app: Flask's test client for
the decisions, and one live gunicorn server for an app that issues its own tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from flask_impulse import AccessDenied, ConfigurationError, PublishRequest, SubscribeRequest
from tests.support import secrets
from tests.support.apps import make_app
from tests.support.secrets import make_token, remember
from tests.support.server import LiveServer
from tests.support.streams import SSEStream


def status_of(client: FlaskClient, query: str, **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
    """Open a stream and close it at once: its status, and its JSON when refused."""
    response = client.get(f"/rt/?{query}", **kwargs)
    try:
        return response.status_code, (response.get_json() if response.status_code != 200 else None)
    finally:
        response.close()


def test_authorize_hook_is_asked_once_per_channel_with_the_verified_token() -> None:
    app, impulse = make_app(IMPULSE_JWT_SECRET=secrets.JWT_SECRET)
    asked: list[SubscribeRequest] = []

    @impulse.authorize
    def record(subscription: SubscribeRequest) -> bool:
        asked.append(subscription)
        return True

    token = make_token("alice", ["chat:*"], role="admin")
    status, _ = status_of(app.test_client(), f"channel=chat:a&channel=chat:b&topic=r1&token={token}")
    assert status == 200
    assert [(s.channel, s.topic, s.token, s.subject) for s in asked] == [
        ("chat:a", "r1", token, "alice"),
        ("chat:b", "r1", token, "alice"),
    ]
    assert asked[0].claims is not None and asked[0].claims["role"] == "admin"
    assert asked[0].request.args["topic"] == "r1"


def test_a_denying_hook_answers_403_naming_it_and_why_only_in_debug_mode() -> None:
    app, impulse = make_app()

    @impulse.authorize
    def members_only(subscription: SubscribeRequest) -> bool:
        if subscription.channel == "room:ops":
            raise AccessDenied("bob is not in room:ops")
        return True

    client = app.test_client()
    assert status_of(client, "channel=room:lobby&token=bob")[0] == 200
    refusal = {"error": "Forbidden", "check": "authorize:members_only", "channel": "room:ops"}
    assert status_of(client, "channel=room:lobby&channel=room:ops&token=bob") == (403, refusal)
    app.debug = True
    assert status_of(client, "channel=room:ops&token=bob") == (403, {**refusal, "details": "bob is not in room:ops"})


@pytest.mark.parametrize("answer", [False, None, 1, "", b"alice", object()])
def test_anything_but_true_or_a_subject_from_a_hook_denies(answer: object) -> None:
    app, impulse = make_app(DEBUG=True)
    impulse.authorize(lambda subscription: answer)
    status, body = status_of(app.test_client(), "channel=a")
    assert status == 403
    assert body is not None and body["check"] == "authorize:<lambda>"
    assert "not True" in body["details"]


def test_every_hook_must_allow() -> None:
    app, impulse = make_app()
    impulse.authorize(lambda subscription: True)

    @impulse.authorize
    def no_topics(subscription: SubscribeRequest) -> bool:
        return subscription.topic is None

    client = app.test_client()
    assert status_of(client, "channel=a")[0] == 200
    assert status_of(client, "channel=a&topic=t")[1] == {
        "error": "Forbidden",
        "check": "authorize:no_topics",
        "channel": "a",
    }


def test_a_hook_may_refuse_with_its_own_status_and_error() -> None:
    app, impulse = make_app()

    @impulse.authorize
    def logged_in(subscription: SubscribeRequest) -> bool:
        raise AccessDenied("no session", error="Login required", status=401)

    status, body = status_of(app.test_client(), "channel=a")
    assert (status, body) == (401, {"error": "Login required", "check": "authorize:logged_in", "channel": "a"})


def test_a_failing_hook_is_a_json_500_and_opens_nothing() -> None:
    app, impulse = make_app()

    @impulse.authorize
    def broken(subscription: SubscribeRequest) -> bool:
        raise RuntimeError("database down")

    status, body = status_of(app.test_client(), "channel=a")
    assert status == 500
    assert body == {"error": "Internal server error"}
    with app.app_context():
        assert impulse.push("a", 1) == 0


def test_authorize_push_refuses_the_whole_batch_before_anything_is_sent() -> None:
    app, impulse = make_app(DEBUG=True)
    seen: list[PublishRequest] = []

    @impulse.authorize_push
    def not_system(push: PublishRequest) -> bool:
        seen.append(push)
        return not push.channel.startswith("system:")

    client = app.test_client()
    headers = {"Authorization": f"Bearer {secrets.PUSH_SECRET}"}
    batch = [{"channel": "news", "payload": 1}, {"channel": "system:halt", "audience": {"topic": "t", "tokens": ["u"]}}]
    answer = client.post("/rt/", json=batch, headers=headers)
    assert answer.status_code == 403
    assert answer.get_json()["check"] == "authorize_push:not_system"
    assert [(p.channel, p.topic, p.tokens, p.payload) for p in seen] == [
        ("news", None, None, 1),
        ("system:halt", "t", ("u",), None),
    ]
    # The push secret is checked first: a wrong one never reaches the hook.
    seen.clear()
    assert client.post("/rt/", json=batch[0], headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert seen == []


def test_plain_mode_takes_the_token_from_query_header_or_cookie_as_the_audience() -> None:
    app, impulse = make_app()
    asked: list[str | None] = []
    impulse.authorize(lambda subscription: asked.append(subscription.token) or True)
    client = app.test_client()
    token = remember(secrets.PLAIN_TOKEN)
    status_of(client, f"channel=a&token={token}")
    status_of(client, "channel=a", headers={"Authorization": f"Bearer {token}"})
    client.set_cookie("impulse_token", token)
    status_of(client, "channel=a")
    assert asked == [token, token, token]


def test_the_token_cookie_can_be_turned_off() -> None:
    app, _ = make_app(IMPULSE_TOKEN_COOKIE="", IMPULSE_JWT_SECRET=secrets.JWT_SECRET)
    client = app.test_client()
    client.set_cookie("impulse_token", make_token("alice", ["*"]))
    assert status_of(client, "channel=a")[1] == {"error": "Token required", "check": "token", "channel": "a"}


def test_token_failures_say_why_only_in_debug_mode() -> None:
    app, _ = make_app(IMPULSE_JWT_SECRET=secrets.JWT_SECRET)
    token = make_token("alice", ["*"], key=secrets.FOREIGN_JWT_SECRET)
    client = app.test_client()
    assert status_of(client, f"channel=a&token={token}")[1] == {"error": "Invalid token", "check": "token"}
    app.debug = True
    body = status_of(client, f"channel=a&token={token}")[1]
    assert body is not None and "signature" in body["details"]
    assert token not in str(body)


def test_issue_token_without_a_key_names_the_setting() -> None:
    app, impulse = make_app()
    with app.app_context(), pytest.raises(ConfigurationError, match="IMPULSE_JWT_SECRET"):
        impulse.issue_token("alice", channels=["chat:*"])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"IMPULSE_CORS_CREDENTIALS": True}, "explicit list of origins"),
        ({"IMPULSE_CORS_ORIGINS": "app.example.com"}, "scheme://host"),
        ({"IMPULSE_CORS_ORIGINS": "https://app.example.com/path"}, "scheme://host"),
        ({"IMPULSE_JWT_SECRET": "too-short"}, "32 bytes"),
    ],
)
def test_unsafe_settings_stop_the_app(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_app(**config)


def test_query_string_over_the_limit_is_414_on_every_path() -> None:
    app, _ = make_app(IMPULSE_MAX_QUERY_LENGTH=100)
    client = app.test_client()
    for path in ("/rt/?channel=a&pad=", "/rt/health?pad="):
        answer = client.get(path + "x" * 200)
        assert answer.status_code == 414
        assert answer.get_json()["error"] == "Query string too long"


# -- a live embedded app that issues its own tokens -----------------------------------------------------
@pytest.fixture(scope="module")
def secured() -> Iterator[str]:
    env = {"SECURED_PUSH_SECRET": secrets.EMBEDDED_PUSH_SECRET, "SECURED_JWT_SECRET": secrets.JWT_SECRET}
    with LiveServer("tests.apps.secured:app", env=env, health_path="/realtime/health", name="secured") as server:
        yield server.url


def issued(base: str, subject: str, channels: list[str]) -> str:
    answer = requests.post(f"{base}/token", json={"subject": subject, "channels": channels}, timeout=10)
    return remember(answer.json()["token"])


@pytest.mark.live
def test_embedded_app_issues_tokens_and_its_hook_keeps_rooms_private(secured: str) -> None:
    alice, bob = issued(secured, "alice", ["room:*"]), issued(secured, "bob", ["room:*"])
    with SSEStream(f"{secured}/realtime", {"channel": "room:ops", "token": alice}) as stream:
        assert stream.status == 200
        push = {"channel": "room:ops", "payload": "hi", "audience": {"tokens": ["alice"]}}
        headers = {"Authorization": f"Bearer {secrets.EMBEDDED_PUSH_SECRET}"}
        assert requests.post(f"{secured}/realtime", json=push, headers=headers, timeout=10).json()["sent"] == 1
        assert stream.messages(1) == [{"channel": "room:ops", "payload": "hi"}]
    with SSEStream(f"{secured}/realtime", {"channel": "room:ops", "token": bob}) as stream:
        assert stream.status == 403
        assert stream.read_json() == {"error": "Forbidden", "check": "authorize:member_of_room", "channel": "room:ops"}


@pytest.mark.live
def test_embedded_push_hook_refuses_with_403(secured: str) -> None:
    headers = {"Authorization": f"Bearer {secrets.EMBEDDED_PUSH_SECRET}"}
    answer = requests.post(
        f"{secured}/realtime", json={"channel": "system:x", "payload": 1}, headers=headers, timeout=10
    )
    assert answer.status_code == 403
    assert answer.json() == {
        "error": "Forbidden",
        "check": "authorize_push:nobody_pushes_to_system",
        "channel": "system:x",
    }


# -- the standalone service's settings ---------------------------------------------------------------
def test_secret_lists_from_the_environment_add_to_realtime_secret() -> None:
    from flask_impulse.server.service import config_from_environment

    environ = {"REALTIME_SECRET": "a,with-comma", "REALTIME_SECRETS": "b, c", "IMPULSE_SECRETS": "c,d"}
    assert config_from_environment(environ)["IMPULSE_SECRET"] == ["a,with-comma", "b", "c", "d"]
    assert config_from_environment({"REALTIME_SECRET": "a,b"})["IMPULSE_SECRET"] == "a,b"
    assert config_from_environment({"REALTIME_JWT_SECRET": "j"})["IMPULSE_JWT_SECRET"] == "j"


def test_repeated_secret_flag_keeps_every_secret() -> None:
    from flask_impulse.server.cli import build_parser, service_config

    args = build_parser().parse_args(["--secret", "new", "--secret", "old"])
    assert service_config(args)["IMPULSE_SECRET"] == ["new", "old"]


def test_trusted_proxies_give_the_client_address_to_the_per_address_limit() -> None:
    from flask_impulse.server.service import create_app

    app = create_app(
        {"IMPULSE_SECRET": secrets.PUSH_SECRET, "IMPULSE_TRUSTED_PROXIES": 1, "IMPULSE_MAX_STREAMS_PER_IP": 1}
    )
    client = app.test_client()
    first = client.get("/?channel=a", headers={"X-Forwarded-For": "203.0.113.7"})
    assert first.status_code == 200
    second = client.get("/?channel=a", headers={"X-Forwarded-For": "203.0.113.7"})
    assert second.status_code == 429
    other = client.get("/?channel=a", headers={"X-Forwarded-For": "198.51.100.1"})
    assert other.status_code == 200
    for response in (first, second, other):
        response.close()


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),  # one /64: one client
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:192.0.2.1", "192.0.2.1", True),
        ("192.0.2.1", "192.0.2.2", False),
    ],
)
def test_per_address_quota_counts_an_ipv6_client_by_its_64(first: str, second: str, same: bool) -> None:
    from flask_impulse.security.quotas import StreamQuotas, TooManyStreams

    quotas = StreamQuotas(per_ip=1, per_token=0)
    release = quotas.acquire(first, None)
    if same:
        with pytest.raises(TooManyStreams):
            quotas.acquire(second, None)
    else:
        quotas.acquire(second, None)
    release()
    release()  # giving a stream back twice gives back one
    quotas.acquire(first, None)
    with pytest.raises(TooManyStreams):
        quotas.acquire(first, None)


def test_hooks_run_after_the_quota_and_a_denied_stream_gives_its_place_back() -> None:
    app, impulse = make_app(IMPULSE_MAX_STREAMS_PER_IP=1, IMPULSE_STREAMS_PER_IP_EXEMPT="")
    asked: list[str] = []

    @impulse.authorize
    def only_open(subscription: SubscribeRequest) -> bool:
        asked.append(subscription.channel)
        return subscription.channel == "open"

    client = app.test_client()
    assert status_of(client, "channel=closed")[0] == 403
    held = client.get("/rt/?channel=open")  # holds the address's one place (never iterated)
    assert held.status_code == 200
    status, body = status_of(client, "channel=open")
    assert status == 429 and body is not None and body["check"] == "streams_per_ip"
    assert asked == ["closed", "open"]  # the refused floods never reached the hook
    held.close()


def test_this_host_and_private_networks_are_not_counted_per_address_by_default() -> None:
    from flask_impulse.config import DEFAULTS
    from flask_impulse.security.quotas import StreamQuotas, TooManyStreams

    quotas = StreamQuotas(per_ip=1, per_token=1, exempt=DEFAULTS["IMPULSE_STREAMS_PER_IP_EXEMPT"].split(","))
    for proxy in ("127.0.0.1", "::1", "10.1.2.3", "172.20.0.5", "192.168.1.1", "fd00::1", "::ffff:10.0.0.1"):
        quotas.acquire(proxy, None)
        quotas.acquire(proxy, None)  # a proxy speaks for many clients
    quotas.acquire("198.51.100.1", None)
    with pytest.raises(TooManyStreams):
        quotas.acquire("198.51.100.1", None)
    # A token is still counted, wherever it comes from.
    quotas.acquire("10.0.0.1", b"token-key")
    with pytest.raises(TooManyStreams):
        quotas.acquire("10.0.0.2", b"token-key")


def test_a_malformed_exempt_network_stops_the_app() -> None:
    with pytest.raises(ConfigurationError, match="IMPULSE_STREAMS_PER_IP_EXEMPT"):
        make_app(IMPULSE_STREAMS_PER_IP_EXEMPT="10.0.0.0/33")
