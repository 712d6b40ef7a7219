"""The exception tree and the one error path: every class under the root, refusals named for
what they refuse, and one handler answering them on the blueprint and the service alike."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from flask_impulse import errors
from flask_impulse.errors import (
    AccessDenied,
    ConfigurationError,
    ImpulseError,
    PushDenied,
    PushError,
    Refusal,
    SubscriptionDenied,
    SubscriptionRefused,
    TooManyConnections,
    TooManyStreams,
)
from flask_impulse.extension import Impulse
from flask_impulse.server.service import create_app


def test_every_exception_of_the_package_is_under_the_root() -> None:
    classes = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert len(classes) >= 18
    assert all(issubclass(cls, ImpulseError) for cls in classes)


@pytest.mark.parametrize("refusal", [SubscriptionDenied, TooManyStreams, TooManyConnections])
def test_a_subscription_refusal_is_no_push_error(refusal: type[Refusal]) -> None:
    assert issubclass(refusal, SubscriptionRefused)
    assert not issubclass(refusal, PushError)


def test_a_hook_denial_is_access_denied_on_either_side() -> None:
    assert issubclass(SubscriptionDenied, AccessDenied) and issubclass(PushDenied, AccessDenied)
    assert issubclass(PushDenied, PushError) and issubclass(PushError, ValueError)
    assert PushDenied("no").status == SubscriptionDenied("no").status == 403
    assert TooManyStreams("full").status == 429


def test_a_bad_setting_is_a_configuration_error_and_still_a_value_error() -> None:
    app = Flask(__name__)
    app.config["IMPULSE_HEARTBEAT_INTERVAL"] = 0
    with pytest.raises(ConfigurationError, match="IMPULSE_HEARTBEAT_INTERVAL") as caught:
        Impulse(app)
    assert isinstance(caught.value, ValueError)


def test_a_refusal_raised_by_a_hook_is_answered_with_its_fields_and_headers() -> None:
    app = Flask(__name__)
    impulse = Impulse(app)
    app.register_blueprint(impulse.blueprint, url_prefix="/realtime")

    @impulse.authorize
    def busy(subscription: object) -> bool:
        raise SubscriptionRefused("Busy", "come back later", status=503, headers={"Retry-After": "7"})

    answer = app.test_client().get("/realtime?channel=c")
    assert (answer.status_code, answer.get_json()) == (503, {"error": "Busy", "details": "come back later"})
    assert answer.headers["Retry-After"] == "7"


def test_the_service_answers_outside_the_blueprint_with_the_same_handler(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app({"IMPULSE_SECRET": "s" * 32})

    @app.route("/boom", methods=["TRACE"])
    def boom() -> str:
        raise RuntimeError("a bug of ours")

    client = app.test_client()
    answer = client.open("/", method="TRACE")
    assert (answer.status_code, answer.get_json()) == (405, {"error": "Method Not Allowed"})
    with caplog.at_level(logging.ERROR):
        answer = client.open("/boom", method="TRACE")
    assert (answer.status_code, answer.get_json()) == (500, {"error": "Internal server error"})
    assert [record.exc_info is not None for record in caplog.records if record.levelno >= logging.ERROR] == [True]
