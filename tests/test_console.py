"""The operator console in one process: the rate ring, the figures summed over workers, the
session cookie, and BASE/console's answers through Flask's test client (off, refused, the
page, the snapshot, the push form)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_impulse import ConfigurationError, metrics
from flask_impulse.console import (
    CONSOLE_HEADERS,
    COOKIE,
    SAMPLES,
    RateRing,
    Sample,
    _session_value,
    _valid_session,
    sum_figures,
)
from flask_impulse.state import EXTENSION_KEY
from tests.support.apps import make_app
from tests.support.secrets import CONSOLE_TOKEN, PUSH_SECRET
from tests.support.server import free_port

CONSOLE = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}


def console_app(**config: Any) -> Flask:
    app, _ = make_app(IMPULSE_CONSOLE_TOKEN=CONSOLE_TOKEN, **config)
    return app


# -- the ring and the sums -------------------------------------------------------------------
def test_rates_are_the_differences_of_the_totals_per_second() -> None:
    ring = RateRing(3)
    ring.add(Sample(100.0, 0, 0, 0))
    ring.add(Sample(101.0, 5, 20, 0))
    ring.add(Sample(103.0, 9, 30, 2))
    assert ring.rates() == [
        {"time": 101.0, "pushes": 5.0, "deliveries": 20.0, "drops": 0.0},
        {"time": 103.0, "pushes": 2.0, "deliveries": 5.0, "drops": 1.0},
    ]


def test_the_ring_keeps_only_its_last_samples() -> None:
    ring = RateRing(SAMPLES)
    for second in range(SAMPLES * 2):
        ring.add(Sample(float(second), second, 2 * second, 0))
    rates = ring.rates()
    assert len(rates) == SAMPLES
    assert rates[0]["time"] == SAMPLES and rates[-1]["time"] == 2 * SAMPLES - 1
    assert {rate["pushes"] for rate in rates} == {1.0}


def test_a_total_that_falls_when_a_worker_leaves_is_no_negative_rate() -> None:
    ring = RateRing()
    ring.add(Sample(1.0, 50, 500, 3))
    ring.add(Sample(2.0, 20, 200, 1))  # a worker exited and took its counts with it
    ring.add(Sample(2.0, 21, 201, 1))  # no time passed: no rate
    assert ring.rates() == [{"time": 2.0, "pushes": 0.0, "deliveries": 0.0, "drops": 0.0}]


def test_the_instance_figures_sum_every_worker() -> None:
    own = {"totals": {"pushes": 1, "deliveries": 2, "drops": 0}, "channels": {"a": 2}, "draining": False}
    others = [
        {"totals": {"pushes": 10, "deliveries": 20, "drops": 1}, "channels": {"a": 1, "b": 5}, "draining": True},
        {"totals": {"pushes": 100, "deliveries": 200, "drops": 0}, "channels": {}, "draining": False},
    ]
    summed = sum_figures(own, others)
    assert summed["totals"] == {"pushes": 111, "deliveries": 222, "drops": 1}
    assert summed["channels"] == {"a": 3, "b": 5}
    assert summed["draining"] is True and summed["workers"] == 3


def test_a_session_cookie_is_valid_until_it_expires_and_only_under_its_token() -> None:
    later = int(time.time()) + 60
    value = _session_value(CONSOLE_TOKEN, later)
    assert CONSOLE_TOKEN not in value
    assert _valid_session(CONSOLE_TOKEN, value)
    assert not _valid_session("another-console-token", value)
    assert not _valid_session(CONSOLE_TOKEN, _session_value(CONSOLE_TOKEN, int(time.time()) - 1))
    tampered = f"{later + 3600}.{value.partition('.')[2]}"
    assert not _valid_session(CONSOLE_TOKEN, tampered)
    for junk in ("", ".", "abc.def", "\u00b2\u00b3.x", "9" * 400):
        assert not _valid_session(CONSOLE_TOKEN, junk)


# -- off ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/console", "/console/snapshot", "/console/push", "/console/console.js"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_without_a_console_token_every_console_path_is_an_unknown_path(path: str, method: str) -> None:
    app, _ = make_app()
    client = app.test_client()
    answer = client.open(f"/rt{path}", method=method, headers=CONSOLE)
    unknown = client.open("/rt/no-such-path", method=method, headers=CONSOLE)
    assert (answer.status_code, answer.get_json()) == (404, {"error": "Not found"})
    assert dict(answer.headers) == dict(unknown.headers)


def test_a_blank_console_token_stops_the_app() -> None:
    with pytest.raises(ConfigurationError, match="IMPULSE_CONSOLE_TOKEN"):
        make_app(IMPULSE_CONSOLE_TOKEN="   ")
    with pytest.raises(ConfigurationError, match="IMPULSE_CONSOLE_TOKEN must be a string"):
        make_app(IMPULSE_CONSOLE_TOKEN=["a" * 32])


# -- refused ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/console", "/console/snapshot", "/console/console.js"])
def test_no_token_is_401_and_a_wrong_one_403(path: str) -> None:
    client = console_app().test_client()
    refused = client.get(f"/rt{path}")
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "Console token required"
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="impulse-console"'
    for headers, query in (({"Authorization": "Bearer wrong-console-token"}, ""), ({}, "?token=wrong")):
        wrong = client.get(f"/rt{path}{query}", headers=headers)
        assert (wrong.status_code, wrong.get_json()) == (403, {"error": "Invalid token"})
    # The push secret is not the console token.
    assert client.get(f"/rt{path}", headers={"Authorization": f"Bearer {PUSH_SECRET}"}).status_code == 403


def test_a_forged_or_expired_cookie_is_401() -> None:
    client = console_app().test_client()
    client.set_cookie(COOKIE, _session_value(CONSOLE_TOKEN, int(time.time()) - 5), path="/rt/console")
    assert client.get("/rt/console/snapshot").status_code == 401
    client.set_cookie(COOKIE, _session_value("not-the-token", int(time.time()) + 60), path="/rt/console")
    assert client.get("/rt/console/snapshot").status_code == 401


def test_wrong_methods_are_405_once_the_console_is_on() -> None:
    client = console_app().test_client()
    assert client.post("/rt/console", headers=CONSOLE).status_code == 405
    assert client.get("/rt/console/push", headers=CONSOLE).status_code == 405
    assert client.delete("/rt/console/snapshot", headers=CONSOLE).get_json() == {"error": "Method not allowed"}


# -- the page ---------------------------------------------------------------------------------
def test_the_token_in_the_query_becomes_a_strict_cookie_and_leaves_the_address() -> None:
    client = console_app().test_client()
    answer = client.get(f"/rt/console?token={CONSOLE_TOKEN}")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/rt/console"
    cookie = answer.headers["Set-Cookie"]
    assert CONSOLE_TOKEN not in cookie
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/rt/console", "Max-Age=3600"):
        assert attribute in cookie
    page = client.get("/rt/console")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert client.get("/rt/console/snapshot").status_code == 200
    with client.get("/rt/console/console.js") as script:
        assert script.mimetype == "text/javascript"


def test_the_page_has_no_inline_code_and_names_its_own_files() -> None:
    client = console_app().test_client()
    page = client.get("/rt/console", headers=CONSOLE).get_data(as_text=True)
    assert '<script src="/rt/console/console.js" defer></script>' in page
    assert '<link rel="stylesheet" href="/rt/console/console.css">' in page
    assert 'data-base="/rt/"' in page
    assert "<script>" not in page and "<style" not in page and " style=" not in page and " on" + "click" not in page
    assert "http://" not in page and "https://" not in page  # no CDN, no font service


@pytest.mark.parametrize("path", ["/console", "/console/snapshot", "/console/console.css", "/console/nope"])
def test_every_console_answer_carries_the_strict_headers(path: str) -> None:
    with console_app().test_client().get(f"/rt{path}", headers=CONSOLE) as answer:
        for name, value in CONSOLE_HEADERS.items():
            assert answer.headers[name] == value


# -- the snapshot -----------------------------------------------------------------------------
def open_stream(client: FlaskClient, query: str) -> Any:
    response = client.get(f"/rt/?{query}", buffered=False)
    assert response.status_code == 200
    return response


def test_the_snapshot_counts_streams_channels_pushes_and_deliveries() -> None:
    app = console_app(IMPULSE_PRESENCE_CHANNELS="room:*")
    client = app.test_client()
    console = app.extensions[EXTENSION_KEY].console
    streams = [
        open_stream(client, "channel=room:a&clientId=alice"),
        open_stream(client, "channel=room:a&clientId=bob"),
        open_stream(client, "channel=news&channel=room:a&clientId=alice"),
    ]
    try:
        for _ in range(2):
            pushed = client.post(
                "/rt/", json={"channel": "room:a", "payload": 1}, headers={"Authorization": f"Bearer {PUSH_SECRET}"}
            )
            assert pushed.get_json()["sent"] == 3
        console.tick()
        snapshot = client.get("/rt/console/snapshot", headers=CONSOLE).get_json()
    finally:
        for stream in streams:
            stream.close()
    assert snapshot["worker"]["connections"] == 3 and snapshot["worker"]["draining"] is False
    assert snapshot["instance"] == {"workers": 1, "connections": 3, "draining": False}
    assert snapshot["totals"] == {"pushes": 2, "deliveries": 6, "drops": 0}
    assert snapshot["channels"] == [
        {"channel": "room:a", "connections": 3, "members": 2},
        {"channel": "news", "connections": 1},
    ]
    assert snapshot["backplane"] == {"kind": "memory", "status": "ok"}
    assert snapshot["presence"] == {"patterns": ["room:*"]}
    assert snapshot["rates"]["interval"] == 1.0
    # From the sample taken at start to the one just taken (and any the timer took between):
    # each push reached three streams.
    rates = snapshot["rates"]["samples"]
    assert any(rate["pushes"] > 0 for rate in rates)
    assert all(rate["deliveries"] == pytest.approx(3 * rate["pushes"], abs=0.01) for rate in rates)
    assert set(snapshot) == {
        "time",
        "uptime",
        "worker",
        "instance",
        "totals",
        "rates",
        "channels",
        "backplane",
        "presence",
    }


def test_the_readiness_probe_channel_is_not_listed() -> None:
    app = console_app()
    client = app.test_client()
    assert client.get("/rt/health/ready").status_code == 200
    snapshot = client.get("/rt/console/snapshot", headers=CONSOLE).get_json()
    assert snapshot["channels"] == []


# -- the push form -------------------------------------------------------------------------------
def test_the_console_push_answers_what_post_base_answers_and_keeps_idempotency() -> None:
    client = console_app().test_client()
    with_key = {**CONSOLE, "Idempotency-Key": "console-key-1"}
    first = client.post("/rt/console/push", json={"channel": "ops", "payload": {"n": 1}}, headers=with_key)
    again = client.post("/rt/console/push", json={"channel": "ops", "payload": {"n": 1}}, headers=with_key)
    assert first.status_code == 200 and set(first.get_json()) == {"sent", "id"}
    assert again.get_json() == {**first.get_json(), "duplicate": True}
    # The same key through POST BASE is the same push: one idempotency store.
    direct = client.post(
        "/rt/", json={"channel": "ops", "payload": {"n": 1}},
        headers={"Authorization": f"Bearer {PUSH_SECRET}", "Idempotency-Key": "console-key-1"},
    )  # fmt: skip
    assert direct.get_json() == again.get_json()


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ('{"channel": "ops", "payload": nope}', 400, "Invalid JSON body"),
        ('{"payload": 1}', 400, "Invalid request body"),
        ('{"channel": "bad\\u0000name", "payload": 1}', 400, "Invalid request body"),
        ('{"channel": "ops", "payload": 1, "extra": 2}', 400, "Invalid request body"),
    ],
)
def test_bad_input_to_the_push_form_is_the_push_endpoints_json_error(body: str, status: int, error: str) -> None:
    client = console_app().test_client()
    console = client.post("/rt/console/push", data=body, content_type="application/json", headers=CONSOLE)
    direct = client.post(
        "/rt/", data=body, content_type="application/json", headers={"Authorization": f"Bearer {PUSH_SECRET}"}
    )
    assert (console.status_code, console.get_json()["error"]) == (status, error)
    assert console.get_json() == direct.get_json()


def test_a_cookie_push_must_be_json_so_that_no_cross_site_form_can_send_it() -> None:
    client = console_app().test_client()
    client.get(f"/rt/console?token={CONSOLE_TOKEN}")
    refused = client.post("/rt/console/push", data='{"channel": "ops"}', content_type="text/plain")
    assert refused.status_code == 403
    assert client.post("/rt/console/push", json={"channel": "ops"}).status_code == 200


def test_the_console_push_needs_the_console_token_not_the_push_secret() -> None:
    client = console_app().test_client()
    assert client.post("/rt/console/push", json={"channel": "ops"}).status_code == 401
    secret = {"Authorization": f"Bearer {PUSH_SECRET}"}
    assert client.post("/rt/console/push", json={"channel": "ops"}, headers=secret).status_code == 403


def test_the_console_token_is_redacted_from_every_log_record(caplog: pytest.LogCaptureFixture) -> None:
    console_app()
    with caplog.at_level(logging.INFO):
        logging.getLogger("an.app").info("GET /rt/console/snapshot, Authorization: %s", CONSOLE_TOKEN)
    assert CONSOLE_TOKEN not in caplog.text


def test_a_redis_that_does_not_answer_is_shown_as_unreachable_not_a_500() -> None:
    app = console_app(IMPULSE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", IMPULSE_TOKEN_HASH_KEY="k" * 32)
    answer = app.test_client().get("/rt/console/snapshot", headers=CONSOLE)
    assert answer.status_code == 200
    assert answer.get_json()["backplane"] == {"kind": "redis", "status": "unreachable", "details": "ConnectionError"}
    app.extensions[EXTENSION_KEY].broker.backplane.close()


def test_slow_consumer_drops_are_counted_with_metrics_off() -> None:
    app = console_app()
    console = app.extensions[EXTENSION_KEY].console
    assert not metrics.recorder.enabled
    metrics.recorder.dropped()
    assert console.own_figures()["totals"]["drops"] == 1
