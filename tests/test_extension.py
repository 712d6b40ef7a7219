"""The extension's Flask conventions, with Flask's test client (no server needed)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from flask import Flask

from flask_impulse import ConfigurationError, Impulse, PushError
from flask_impulse.config import DEFAULTS
from tests.support.apps import flask_app


def test_init_app_sets_defaults_and_keeps_state_in_extensions() -> None:
    app = flask_app(IMPULSE_HEARTBEAT_INTERVAL=5)
    impulse = Impulse()
    impulse.init_app(app)
    assert app.config["IMPULSE_HEARTBEAT_INTERVAL"] == 5
    for key, default in DEFAULTS.items():
        if key != "IMPULSE_HEARTBEAT_INTERVAL":
            assert app.config[key] == default
    assert app.extensions["impulse"].settings.heartbeat_interval == 5
    assert not hasattr(impulse, "app")


def test_init_app_twice_says_what_went_wrong() -> None:
    app = flask_app()
    impulse = Impulse(app)
    with pytest.raises(RuntimeError, match="already registered"):
        impulse.init_app(app)


def test_constructor_options_are_defaults_that_app_config_overrides() -> None:
    app = flask_app(IMPULSE_SECRET="from-config")
    Impulse(app, secret="from-options", history_size=7)
    settings = app.extensions["impulse"].settings
    assert settings.secrets == ("from-config",)
    assert settings.history_size == 7


def test_unknown_option_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown Impulse options: colour"):
        Impulse(colour="blue")


def test_invalid_setting_is_refused_at_init() -> None:
    with pytest.raises(ValueError, match="IMPULSE_HEARTBEAT_INTERVAL"):
        Impulse(flask_app(IMPULSE_HEARTBEAT_INTERVAL=0))


def test_app_factory_and_two_apps_in_one_process_are_isolated() -> None:
    impulse = Impulse()

    def create_app(secret: str) -> Flask:
        app = flask_app(IMPULSE_SECRET=secret)
        impulse.init_app(app)
        app.register_blueprint(impulse.blueprint, url_prefix="/rt")
        return app

    first, second = create_app("one"), create_app("two")
    assert first.extensions["impulse"].broker is not second.extensions["impulse"].broker
    first_client, second_client = first.test_client(), second.test_client()
    stream = first_client.get("/rt/?channel=news", buffered=False)
    try:
        pushed = second_client.post(
            "/rt/", json={"channel": "news", "payload": 1}, headers={"Authorization": "Bearer two"}
        )
        assert pushed.json == {"sent": 0, "id": pushed.json["id"]}
        assert (
            first_client.post("/rt/", json={"channel": "news"}, headers={"Authorization": "Bearer two"}).status_code
            == 403
        )
        with first.app_context():
            assert impulse.push("news", {"hello": "first"}) == 1
        with second.app_context():
            assert impulse.push("news", {"hello": "second"}) == 0
    finally:
        stream.close()


def test_push_outside_an_app_context_uses_the_only_app() -> None:
    app = flask_app()
    impulse = Impulse(app)
    assert impulse.push("alone", 1) == 0
    other = Impulse()
    other.init_app(flask_app())
    other.init_app(flask_app())
    with pytest.raises(ConfigurationError, match="app context"):
        other.push("ambiguous", 1)


def test_push_counts_connections_and_routes_like_http() -> None:
    app = flask_app()
    impulse = Impulse(app)
    broker = app.extensions["impulse"].broker
    plain = broker.open(("c",), None, None)
    room = broker.open(("c",), "room", "tok")
    try:
        assert impulse.push("c", 1) == 2
        assert impulse.push("c", 2, topic="room") == 1
        assert impulse.push("c", 3, tokens="tok") == 1
        assert impulse.push("c", 4, tokens=["nobody"]) == 0
        assert impulse.push("c", 5, tokens=[]) == 0
        assert impulse.push("other", 6) == 0
        assert [m.frame.count(b"data:") for m in plain._queue] == [1]
        assert len(room._queue) == 3
    finally:
        broker.release(plain)
        broker.release(room)


@pytest.mark.parametrize(
    ("tokens", "sent"),
    [((), 0), (set(), 0), (frozenset(), 0), (("tok",), 1), ({"tok", "other"}, 1), ({"other"}, 0)],
)
def test_push_takes_tokens_as_any_iterable_an_empty_one_reaching_nobody(tokens: Iterable[str], sent: int) -> None:
    app = flask_app()
    impulse = Impulse(app)
    broker = app.extensions["impulse"].broker
    holder = broker.open(("c",), None, "tok")
    try:
        assert impulse.push("c", 1, tokens=tokens) == sent
        assert impulse.push("c", 2, tokens=(token for token in tokens)) == sent
    finally:
        broker.release(holder)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channel": ""}, "channel must be a non-empty string"),
        ({"channel": "a\nb"}, "control characters"),
        ({"channel": "x" * 300}, "longer than 256"),
        ({"channel": "c", "topic": ""}, "topic must be a non-empty string"),
        ({"channel": "c", "tokens": ["ok", "bad\r\n"]}, "control characters"),
    ],
)
def test_in_process_push_raises_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    impulse = Impulse(flask_app())
    kwargs = {"payload": 1, **kwargs}
    with pytest.raises((PushError, ValueError), match=message):
        impulse.push(**kwargs)  # type: ignore[arg-type]


def test_non_finite_numbers_become_null_as_in_json_stringify() -> None:
    app = flask_app()
    impulse = Impulse(app)
    broker = app.extensions["impulse"].broker
    connection = broker.open(("c",), None, None)
    try:
        impulse.push("c", {"x": float("nan"), "y": float("inf")})
        assert connection._queue[0].frame.endswith(b'data: {"channel":"c","payload":{"x":null,"y":null}}\n\n')
    finally:
        broker.release(connection)


def test_embedded_push_endpoint_is_disabled_without_a_secret() -> None:
    app = flask_app()
    impulse = Impulse(app)
    app.register_blueprint(impulse.blueprint, url_prefix="/realtime")
    response = app.test_client().post("/realtime", json={"channel": "c", "payload": 1})
    assert response.status_code == 403
    assert response.json == {
        "error": "Push endpoint disabled",
        "details": "set IMPULSE_SECRET to enable the HTTP push endpoint",
    }


def test_blueprint_serves_both_prefix_forms_and_health_beneath_it() -> None:
    app = flask_app(IMPULSE_SECRET="s", IMPULSE_HEALTH_PATH="status/")
    impulse = Impulse(app)
    app.register_blueprint(impulse.blueprint, url_prefix="/deep/realtime")
    client = app.test_client()
    assert client.get("/deep/realtime/status").json["status"] == "ok"
    assert client.get("/deep/realtime/health").status_code == 404
    for path in ("/deep/realtime", "/deep/realtime/"):
        response = client.post(path, json={"channel": "c", "payload": 1}, headers={"Authorization": "Bearer s"})
        assert response.status_code == 200, path


@pytest.mark.parametrize(
    ("query", "details"),
    [
        ({"channel": "bad\nchannel"}, "the channel query parameter must not contain control characters"),
        ({"channel": "c" * 257}, "the channel query parameter is longer than 256 characters"),
        ({"channel": "c", "topic": "bad\r\ntopic"}, "the topic query parameter must not contain control characters"),
        ({"channel": "c", "token": "bad\x7ftoken"}, "the token query parameter must not contain control characters"),
    ],
)
def test_a_bad_query_parameter_is_not_called_a_request_body(query: dict[str, str], details: str) -> None:
    app = flask_app()
    app.register_blueprint(Impulse(app).blueprint)
    response = app.test_client().get("/", query_string=query)
    assert response.status_code == 400
    assert response.json == {"error": "Invalid query parameter", "details": details}


def test_a_bad_bearer_token_on_a_stream_is_an_invalid_request() -> None:
    app = flask_app()
    app.register_blueprint(Impulse(app).blueprint)
    response = app.test_client().get("/?channel=c", headers={"Authorization": "Bearer " + "k" * 4097})
    assert response.status_code == 400
    assert response.json == {"error": "Invalid request", "details": "the bearer token is longer than 4096 characters"}


def test_health_token_is_required_when_configured() -> None:
    app = flask_app(IMPULSE_HEALTH_TOKEN="hc")
    impulse = Impulse(app)
    app.register_blueprint(impulse.blueprint)
    client = app.test_client()
    assert client.get("/health").status_code == 401
    assert client.get("/health", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/health?token=hc").json["status"] == "ok"
    assert client.get("/health", headers={"Authorization": "Bearer hc"}).status_code == 200


def test_an_exception_in_a_view_is_json_500_not_html() -> None:
    app = flask_app(IMPULSE_SECRET="s")
    impulse = Impulse(app)
    app.register_blueprint(impulse.blueprint)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    app.extensions["impulse"].broker.publish = explode
    response = app.test_client().post("/", json={"channel": "c", "payload": 1}, headers={"Authorization": "Bearer s"})
    assert response.status_code == 500
    assert response.json == {"error": "Internal server error"}
