"""examples/dashboard, examples/subscriber and examples/serverless, started with the commands
of their READMEs and exercised as a person would."""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import SECRET, Service
from tests.support.browser import Page
from tests.support.server import ROOT, LiveServer
from tests.support.streams import SSEStream

pytestmark = [pytest.mark.live, pytest.mark.browser]

EXAMPLES = ROOT / "examples"


def readme_command(example: str, command: str) -> list[str]:
    """``command`` as argv, after checking that the example's README still shows it."""
    assert command in (EXAMPLES / example / "README.md").read_text(), f"the {example} README no longer says {command}"
    program, *args = shlex.split(command)
    assert program == "python"
    return [sys.executable, *args]


class Dashboard(LiveServer):
    def command(self) -> list[str]:
        return [*readme_command("dashboard", "python examples/dashboard/app.py"), "--port", str(self.port),
                "--interval", "0.2"]  # fmt: skip


@pytest.fixture(scope="module")
def dashboard() -> Iterator[Dashboard]:
    with Dashboard(health_path="/realtime/health", name="dashboard-example") as server:
        yield server


def test_dashboard_page_updates_live_from_the_background_greenlet(
    dashboard: Dashboard, open_page: Callable[..., Page]
) -> None:
    page = open_page(dashboard.url + "/", name="dashboard")
    # Full from the first second: every point of the window is drawn at load, before any push.
    assert len(page.find("#chart").get_attribute("points").split()) == 61
    page.wait_for_attribute("#status", "data-state", "connected")
    first = int(page.wait_until(lambda: page.find("#tick").text if page.find("#tick").text != "0" else None, "a tick"))
    page.wait_until(lambda: int(page.find("#tick").text) >= first + 3, "three more ticks")
    page.wait_for_text("#subscribers", "1")
    assert page.find("#orders").text.isdigit()
    assert len(page.find("#load").text.split()) == 3
    assert len(page.find("#chart").get_attribute("points").split()) == 61  # each push shifts the window
    assert page.console_errors() == []


def test_dashboard_chart_has_a_title_axes_and_units(dashboard: Dashboard, open_page: Callable[..., Page]) -> None:
    page = open_page(dashboard.url + "/", name="dashboard-chart")
    assert page.find("#chart-title").text == "Orders per minute, last 12 s"  # 60 intervals of 0.2 s
    assert page.find("#y-title").text == "orders / min"
    assert page.find("#x-title").text == "time (seconds before now)"
    minus = "\N{MINUS SIGN}"
    x_labels = [f"{minus}12 s", f"{minus}9 s", f"{minus}6 s", f"{minus}3 s", "now"]
    assert [label.text for label in page.find_all("#x-axis text")] == x_labels
    y_labels = [int(label.text) for label in page.find_all("#y-axis text")]
    assert y_labels[0] == 0 and y_labels == sorted(y_labels) and len(y_labels) >= 2
    heights = [float(point.split(",")[1]) for point in page.find("#chart").get_attribute("points").split()]
    assert all(40 <= height <= 210 for height in heights)  # every point inside the axes, under the top label


def test_dashboard_pushes_are_typed_metrics_on_one_channel(dashboard: Dashboard) -> None:
    with SSEStream(dashboard.url + "/realtime", {"channel": "dashboard:metrics"}) as stream:
        payloads = [message["payload"] for message in stream.messages(2)]
    assert set(payloads[0]) == {"time", "tick", "ordersPerMinute", "revenue", "loadAverage", "subscribers"}
    assert payloads[1]["tick"] == payloads[0]["tick"] + 1


def test_dashboard_typescript_comes_from_its_declared_channel() -> None:
    from flask_impulse.typescript import render_realtime_types

    sys.path.insert(0, str(EXAMPLES / "dashboard"))
    try:
        import app as dashboard_app  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(EXAMPLES / "dashboard"))
    text = render_realtime_types(dashboard_app.impulse.channels.values())
    assert "'dashboard:metrics': Metrics;" in text
    assert "  loadAverage: number[];" in text


def test_subscriber_script_prints_each_message_as_a_json_line(standalone: Service) -> None:
    channel, other = f"sub-{uuid.uuid4().hex[:8]}", f"sub-{uuid.uuid4().hex[:8]}"
    command = readme_command(
        "subscriber", "python examples/subscriber/subscribe.py --url http://127.0.0.1:8080/ --channel chat:message"
    )
    command = [part.replace("http://127.0.0.1:8080/", standalone.base).replace("chat:message", channel)
               for part in command] + ["--channel", other, "--topic", "room", "--count", "3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        states = read_lines_until(process, "[connected]", timeout=15)
        assert states[-1] == "[connected]", states
        assert standalone.push({"channel": channel, "payload": {"text": "hi"}, "audience": {"topic": "room"}}).ok
        assert standalone.push({"channel": channel, "payload": "elsewhere", "audience": {"topic": "lobby"}}).ok
        assert standalone.push({"channel": other, "payload": 2}).ok
        assert standalone.push({"channel": channel, "payload": [3]}).ok
        stdout, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    printed = [json.loads(line) for line in stdout.splitlines()]
    assert [(item["channel"], item["payload"]) for item in printed] == [
        (channel, {"text": "hi"}),
        (other, 2),
        (channel, [3]),
    ]
    assert all(item["id"] for item in printed)
    assert process.returncode == 0


def read_lines_until(process: subprocess.Popen[str], wanted: str, timeout: float) -> list[str]:
    """Standard error lines up to ``wanted``, read on a thread so that the wait is bounded."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] != wanted:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        if line is None:
            break
        seen.append(line)
    return seen


def test_subscriber_script_exits_1_when_the_stream_is_refused(standalone: Service) -> None:
    result = subprocess.run(
        [sys.executable, "examples/subscriber/subscribe.py", "--url", standalone.base, "--channel", "bad\x7fname"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "HTTP 400" in result.stderr


def run_serverless(service: Service, event: str, secret: str = SECRET) -> subprocess.CompletedProcess[str]:
    command = readme_command(
        "serverless",
        "python examples/serverless/handler.py "
        """'{"orderId": "A-1001", "total": 42.5, "customerToken": "c-7"}'""",
    )
    command[-1] = event
    env = {**os.environ, "REALTIME_URL": service.base, "REALTIME_SECRET": secret, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_serverless_function_pushes_with_server_client_alone(standalone: Service) -> None:
    order = f"A-{uuid.uuid4().hex[:6]}"
    with (
        SSEStream(standalone.base, {"channel": "order:created"}) as orders,
        SSEStream(standalone.base, {"channel": "order:notice", "token": "c-7"}) as customer,
        SSEStream(standalone.base, {"channel": "order:notice", "token": "someone-else"}) as stranger,
    ):
        result = run_serverless(standalone, json.dumps({"orderId": order, "total": 42.5, "customerToken": "c-7"}))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {
            "statusCode": 200,
            "body": {"sent": {"order:created": 1, "order:notice": 1}},
        }
        [created] = orders.messages(1)
        assert created["payload"]["orderId"] == order
        assert created["payload"]["total"] == 42.5
        assert customer.messages(1)[0]["payload"] == {"orderId": order, "message": f"Order {order} confirmed"}
        stranger.assert_silent(0.3)


def test_serverless_function_answers_400_and_502_instead_of_crashing(standalone: Service) -> None:
    bad_event = run_serverless(standalone, '{"total": 1}')
    assert (bad_event.returncode, json.loads(bad_event.stdout)["statusCode"]) == (1, 400)
    wrong_secret = run_serverless(standalone, '{"orderId": "x", "total": 1}', secret="not-the-secret")
    answer = json.loads(wrong_secret.stdout)
    assert (wrong_secret.returncode, answer["statusCode"]) == (1, 502)
    assert "403" in answer["body"]["error"]


def test_serverless_function_imports_neither_flask_nor_gevent() -> None:
    script = (
        "import sys; "
        "import importlib.util as u; spec = u.spec_from_file_location('handler', 'examples/serverless/handler.py'); "
        "m = u.module_from_spec(spec); spec.loader.exec_module(m); "
        "print(sorted(name for name in ('flask', 'gevent', 'gunicorn') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
