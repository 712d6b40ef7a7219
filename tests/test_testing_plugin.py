"""flask_impulse.testing, loaded as the pytest plugin its entry point registers: the
``impulse_pushes`` recorder on an app's in-process pushes, and ``live_impulse`` with its
subscriber against a real service."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flask import Flask

from flask_impulse import Impulse
from flask_impulse.signals import PushRecord, pushed
from flask_impulse.testing import LiveImpulse, PushRecorder


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    impulse = Impulse(app)

    @app.post("/rooms/<room>/messages")
    def post_message(room: str) -> dict[str, int]:
        return {"sent": impulse.push("chat:message", {"text": "hi"}, topic=room)}

    @app.post("/notify/<user>")
    def notify(user: str) -> dict[str, int]:
        return {"sent": impulse.push("notes", {"n": 1}, tokens=[f"t-{user}", "t-admin"], idempotency_key="k-1")}

    return app


@pytest.mark.unit
def test_the_plugin_is_registered_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("flask_impulse")


@pytest.mark.unit
def test_impulse_pushes_records_each_push_of_the_app(app: Flask, impulse_pushes: PushRecorder) -> None:
    client = app.test_client()
    assert client.post("/rooms/lab/messages").status_code == 200
    assert client.post("/notify/ada").status_code == 200
    assert client.post("/notify/ada").status_code == 200

    record = impulse_pushes.assert_pushed("chat:message", {"text": "hi"}, topic="lab")
    assert record.id and record.sent == 0 and record.duplicate is False
    first, repeat = impulse_pushes.on("notes")
    assert first.tokens == ("t-ada", "t-admin") and first.idempotency_key == "k-1"
    assert repeat.duplicate is True and repeat.id == first.id
    impulse_pushes.assert_pushed("notes", tokens={"t-admin", "t-ada"}, count=2)
    assert impulse_pushes.payloads("chat:message") == [{"text": "hi"}]
    impulse_pushes.clear()
    impulse_pushes.assert_not_pushed()


@pytest.mark.unit
def test_assert_pushed_fails_naming_what_was_pushed(app: Flask, impulse_pushes: PushRecorder) -> None:
    app.test_client().post("/rooms/lab/messages")
    with pytest.raises(AssertionError, match=r"topic='lab'"):
        impulse_pushes.assert_pushed("chat:message", topic="random")
    with pytest.raises(AssertionError, match="expected no push on"):
        impulse_pushes.assert_not_pushed("chat:message")
    with pytest.raises(AssertionError, match="2 time"):
        impulse_pushes.assert_pushed("chat:message", count=2)


@pytest.mark.unit
def test_the_recorder_disconnects_from_the_signal_after_the_test(app: Flask) -> None:
    with PushRecorder() as recorder:
        assert pushed.receivers
    app.test_client().post("/rooms/lab/messages")
    assert len(recorder) == 0
    assert not pushed.receivers


@pytest.mark.unit
def test_pushed_signal_carries_the_app_as_sender(app: Flask) -> None:
    seen: list[tuple[object, PushRecord]] = []

    def receiver(sender: object, push: PushRecord) -> None:
        seen.append((sender, push))

    with pushed.connected_to(receiver):
        app.test_client().post("/rooms/lab/messages")
    ((sender, push),) = seen
    assert sender is app
    assert push.channel == "chat:message"


@pytest.mark.tool
def test_loading_the_plugin_imports_neither_gevent_nor_gunicorn_nor_flask() -> None:
    probe = (
        "import sys, flask_impulse.testing; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'gevent', 'gunicorn', 'flask', 'requests'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.live
def test_live_impulse_delivers_a_push_to_a_subscriber(live_impulse: LiveImpulse) -> None:
    assert len(live_impulse.secret) >= 32
    with (
        live_impulse.subscribe("orders", topic="shop-1") as orders,
        live_impulse.subscribe("orders", topic="shop-2") as other,
    ):
        assert live_impulse.client.push("orders", {"id": 7}, topic="shop-1") == 1
        live_impulse.client.push("orders", {"id": 8}, topic="shop-2")
        assert orders.payloads(1) == [{"id": 7}]
        assert other.payloads(1) == [{"id": 8}]
        orders.assert_silent(0.3)
        assert orders.events[0].id


@pytest.mark.live
def test_a_subscriber_fails_at_its_deadline_when_nothing_comes(live_impulse: LiveImpulse) -> None:
    with live_impulse.subscribe("quiet") as quiet, pytest.raises(AssertionError, match="received 0 before"):
        quiet.wait_for(1, timeout=0.3)


@pytest.mark.live
def test_a_refused_subscription_fails_with_the_answer(live_impulse: LiveImpulse) -> None:
    with pytest.raises(AssertionError, match="400"):
        live_impulse.subscribe("x" * 2000)


@pytest.mark.live
def test_live_impulse_stops_by_pid(tmp_path: object) -> None:
    service = LiveImpulse().start()
    assert service.process is not None
    process = service.process
    service.stop()
    assert process.returncode is not None
