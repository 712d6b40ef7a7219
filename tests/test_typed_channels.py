"""Typed channels: mypy checks pushes and handlers, pushes on declared channels are validated at
runtime, and the same declarations become TypeScript that the official client compiles with."""

from __future__ import annotations

import datetime
import enum
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

import pytest
from flask import Flask

from flask_impulse import Channel, ConfigurationError, Impulse, InvalidPayload, PushError
from flask_impulse.typescript import TypeScriptError, render_realtime_types
from tests.support.server import ROOT
from tests.typing_cases.chat_types import Point, Shape, chat_message, notification, shapes

CASES = ROOT / "tests" / "typing_cases"
JS = ROOT / "tests" / "js"
GOOD_MESSAGE = {"id": "1", "author": {"id": "u1", "name": "Ada"}, "text": "hi", "timestamp": 1.5}


# -- mypy ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mypy_report() -> dict[str, list[tuple[int, str]]]:
    """One mypy --strict run over the package and both typed examples: errors by file."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes", "--no-pretty",
         "flask_impulse", str(CASES / "correct.py"), str(CASES / "wrong.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert "error: " in result.stdout or result.returncode == 0, result.stderr
    errors: dict[str, list[tuple[int, str]]] = {}
    for line in result.stdout.splitlines():
        match = re.match(r"(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$", line)
        if match:
            path = Path(match["path"]).as_posix()
            errors.setdefault(path, []).append((int(match["line"]), match["code"]))
    return errors


def test_mypy_strict_passes_on_the_whole_package(mypy_report: dict[str, list[tuple[int, str]]]) -> None:
    assert {path: found for path, found in mypy_report.items() if path.startswith("flask_impulse")} == {}


def test_mypy_strict_accepts_the_correct_typed_example(mypy_report: dict[str, list[tuple[int, str]]]) -> None:
    assert not [path for path in mypy_report if path.endswith("correct.py")]


def test_mypy_strict_reports_each_misuse_of_a_typed_channel(mypy_report: dict[str, list[tuple[int, str]]]) -> None:
    expected = [
        (number, match.group(1))
        for number, line in enumerate((CASES / "wrong.py").read_text().splitlines(), start=1)
        if (match := re.search(r"# expect: ([a-z-]+)", line))
    ]
    found = next(errors for path, errors in mypy_report.items() if path.endswith("wrong.py"))
    assert len(expected) == 10
    assert sorted(found) == expected


# -- runtime validation ----------------------------------------------------------------------
@pytest.fixture(params=["msgspec", "pure-python"])
def validator(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which validator checks payloads: msgspec, or the checker of a base install (msgspec
    hidden). Their answers must be the same, word for word."""
    if request.param == "pure-python":
        monkeypatch.setitem(sys.modules, "msgspec", None)  # import msgspec now raises ImportError
    return str(request.param)


def fresh(channel: Channel[Any]) -> Channel[Any]:
    """``channel`` with no validator built yet (a channel keeps the first one it builds)."""
    return Channel(channel.name, channel.payload_type)


@pytest.fixture
def app(validator: str) -> Flask:
    app = Flask(__name__)
    app.config["IMPULSE_SECRET"] = "s3cret"
    impulse = Impulse(app, channels=[fresh(chat_message), fresh(notification)])
    impulse.channel(fresh(shapes))
    app.register_blueprint(impulse.blueprint, url_prefix="/rt")
    app.extensions["test_impulse"] = impulse
    return app


def post(app: Flask, body: object) -> tuple[int, dict[str, object]]:
    response = app.test_client().post("/rt", json=body, headers={"Authorization": "Bearer s3cret"})
    return response.status_code, response.get_json()


def test_http_push_with_a_wrong_field_is_400_naming_the_field(app: Flask) -> None:
    status, body = post(app, {"channel": "chat:message", "payload": {**GOOD_MESSAGE, "text": 3}})
    assert status == 400
    assert body["error"] == "Invalid payload"
    assert "payload.text" in str(body["details"])
    assert "Expected `str`, got `int`" in str(body["details"])


def test_http_push_with_a_missing_nested_field_is_400_naming_its_path(app: Flask) -> None:
    status, body = post(app, {"channel": "chat:message", "payload": {**GOOD_MESSAGE, "author": {"id": "u1"}}})
    assert status == 400
    assert body["details"] == "payload.author: Object missing required field `name`"


def test_validation_is_strict_about_json_types(app: Flask) -> None:
    status, body = post(app, {"channel": "shapes", "payload": {"name": "p", "points": [{"x": "1", "y": 2}]}})
    assert (status, body["details"]) == (400, "payload.points[0].x: Expected `float`, got `str`")
    status, body = post(app, {"channel": "notification:new", "payload": {"id": "n", "type": "urgent"}})
    assert status == 400


def test_http_push_of_a_valid_payload_and_of_an_undeclared_channel_pass(app: Flask) -> None:
    status, body = post(app, {"channel": "chat:message", "payload": GOOD_MESSAGE})
    assert (status, body["sent"]) == (200, 0)
    status, body = post(app, {"channel": "anything:else", "payload": {"free": ["form"]}})
    assert (status, body["sent"]) == (200, 0)


def test_a_batch_with_one_invalid_payload_publishes_nothing_and_names_its_index(app: Flask) -> None:
    batch = [
        {"channel": "chat:message", "payload": GOOD_MESSAGE},
        {"channel": "chat:message", "payload": {**GOOD_MESSAGE, "timestamp": "now"}},
    ]
    status, body = post(app, batch)
    assert status == 400
    assert body["details"] == "[1]: payload.timestamp: Expected `float`, got `str`"


def test_push_without_a_payload_on_a_declared_channel_is_400(app: Flask) -> None:
    status, body = post(app, {"channel": "chat:message"})
    assert status == 400
    assert "payload" in str(body["details"])


def test_in_process_push_of_a_wrong_payload_raises_invalid_payload(app: Flask) -> None:
    impulse: Impulse = app.extensions["test_impulse"]
    with app.app_context():
        with pytest.raises(InvalidPayload) as caught:
            impulse.push("chat:message", {**GOOD_MESSAGE, "author": None})
        assert isinstance(caught.value, PushError)
        assert caught.value.status == 400
        assert "payload.author" in str(caught.value)
        with pytest.raises(InvalidPayload):
            impulse.push(shapes, Point(1, 2))  # type: ignore[call-overload]
        assert impulse.push(shapes, Shape("dot", [Point(1, 2)])) == 0
        assert impulse.push(chat_message, GOOD_MESSAGE, topic="room") == 0


def test_validation_can_be_turned_off(app: Flask) -> None:
    off = Flask(__name__)
    off.config.update(IMPULSE_SECRET="s3cret", IMPULSE_VALIDATE_PAYLOADS=False)
    impulse = Impulse(off, channels=[chat_message])
    with off.app_context():
        assert impulse.push("chat:message", {"not": "checked"}) == 0


def test_declaring_a_channel_name_twice_with_another_type_is_refused() -> None:
    impulse = Impulse(channels=[chat_message])
    assert impulse.channel("chat:message", chat_message.payload_type) is chat_message
    with pytest.raises(ConfigurationError, match="already declared"):
        impulse.channel("chat:message", Shape)


@pytest.mark.parametrize("payload_type", [complex, object])
def test_a_payload_type_that_cannot_be_checked_fails_at_start_up(validator: str, payload_type: type) -> None:
    app = Flask(__name__)
    with pytest.raises(ConfigurationError, match="cannot validate"):
        Impulse(app, channels=[Channel("odd", payload_type)])


def test_without_msgspec_a_type_only_msgspec_checks_fails_at_start_up_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "msgspec", None)
    with pytest.raises(ConfigurationError, match=re.escape("pip install flask-impulse[validation]")):
        Impulse(Flask(__name__), channels=[Channel("when", datetime.datetime)])


class Tree(TypedDict):
    label: str
    children: list[Tree]
    weight: NotRequired[float]


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclass
class Reading:
    level: Level
    values: tuple[int, str]
    tags: set[str]
    extra: dict[str, int] | None = None


@pytest.mark.parametrize(
    ("payload_type", "payload"),
    [
        (Tree, {"label": "a", "children": [{"label": "b", "children": [{"label": 3, "children": []}]}]}),
        (Tree, {"label": "a", "children": [], "weight": True}),
        (Tree, {"label": "a"}),
        (Tree, [1]),
        (Reading, {"level": "mid", "values": [1, "a"], "tags": []}),
        (Reading, {"level": 1, "values": [1, "a"], "tags": []}),
        (Reading, {"level": "low", "values": [1], "tags": []}),
        (Reading, {"level": "low", "values": [1, "a"], "tags": [1]}),
        (Reading, {"level": "low", "values": [1, "a"], "tags": [], "extra": {"k": "v"}}),
        (Reading, {"level": "low", "values": [1, "a"], "tags": [], "extra": 5}),
        (int, 1.0),
        (int, True),
        (float, False),
        (str | None, 3),
        (int | str, None),
        (Literal[1, 2], 3),
        (Literal["a", "b"], 1),
        (list[Reading | None], [None, {"values": [1, "a"], "tags": []}]),
    ],
)
def test_the_pure_python_checker_answers_as_msgspec_does(payload_type: Any, payload: Any) -> None:
    """Each wrong payload is refused by both validators, with the same words."""
    with_msgspec = Channel("c", payload_type)
    with pytest.raises(InvalidPayload) as expected:
        with_msgspec.validate(payload)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "msgspec", None)
        without = Channel("c", payload_type)
        with pytest.raises(InvalidPayload) as caught:
            without.validate(payload)
    assert str(caught.value) == str(expected.value)


@pytest.mark.parametrize(
    ("payload_type", "payload"),
    [
        (Tree, {"label": "a", "children": [{"label": "b", "children": []}], "weight": 1, "unknown": "ignored"}),
        (Reading, {"level": "high", "values": [1, "a"], "tags": ["x", "x"], "extra": None}),
        (float, 10**30),
        (Any, {"free": ["form"]}),
        (Literal["a", None], None),
    ],
)
def test_the_pure_python_checker_accepts_what_msgspec_accepts(payload_type: Any, payload: Any) -> None:
    Channel("c", payload_type).validate(payload)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "msgspec", None)
        Channel("c", payload_type).validate(payload)


# -- TypeScript --------------------------------------------------------------------------------
EXPECTED_TYPESCRIPT = """\
// Generated by flask-impulse from the declared channels: do not edit, regenerate.

export interface Author {
  id: string;
  name: string;
}

/** A message posted in a room. */
export interface ChatMessage {
  id: string;
  author: Author;
  text: string;
  timestamp: number;
  reactions?: Record<string, number>;
}

export interface Notification {
  id: string;
  type: 'info' | 'warning' | 'error' | 'success';
  title: string;
  message: string;
  userId?: string | null;
}

export interface Point {
  x: number;
  y: number;
}

export interface Shape {
  name: string;
  points: Point[];
}

export interface RealtimeTypes {
  'chat:message': ChatMessage;
  'notification:new': Notification;
  shapes: Shape;
}
"""


def test_typescript_is_generated_from_the_declared_channels() -> None:
    assert render_realtime_types([shapes, notification, chat_message]) == EXPECTED_TYPESCRIPT


def test_typescript_maps_literals_unions_tuples_and_recursive_types() -> None:
    from tests.typing_cases.ts_types import everything

    text = render_realtime_types([everything])
    assert "export interface Node {\n  label: string;\n  children: Node[];\n}" in text
    assert "  level: 'low' | 'high' | 3 | true;" in text
    assert "  pair: [number, string];" in text
    assert "  tags: (string | null)[];" in text
    assert "  counts: Record<string, number>;" in text
    assert "  status: 'up' | 'down';" in text  # an Enum by its values
    assert "  'user-id': string;" in text
    assert "  at: string;" in text  # a datetime is an ISO string in JSON
    assert "  anything: any;" in text


def test_typescript_refuses_a_type_with_no_json_form() -> None:
    with pytest.raises(TypeScriptError, match=r"odd: no TypeScript type for <class 'complex'>"):
        render_realtime_types([Channel("odd", complex)])


def test_flask_impulse_typescript_command_prints_the_types() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask_impulse", "typescript", "--app", "tests.typing_cases.chat_types"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED_TYPESCRIPT


def test_flask_impulse_typescript_reports_a_missing_module_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask_impulse", "typescript", "--app", "no_such_module_here"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "No module named 'no_such_module_here'" in result.stderr
    assert "Traceback" not in result.stderr


def test_flask_cli_impulse_typescript_reads_the_apps_channels(tmp_path: Path) -> None:
    """``flask impulse typescript`` through the ``flask.commands`` entry point that setup.cfg
    declares (a dist-info made from setup.cfg, so the test does not depend on how the package
    was installed)."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    declared = setup["options.entry_points"]["flask.commands"].strip()
    assert declared == "impulse = flask_impulse.server.commands:impulse_group"
    dist_info = tmp_path / "flask_impulse_entry_points-0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: flask-impulse-entry-points\nVersion: 0\n")
    (dist_info / "entry_points.txt").write_text(f"[flask.commands]\n{declared}\n")
    output = tmp_path / "realtime.ts"
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tests.typing_cases.typed_app", "impulse", "typescript",
         "-o", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert output.read_text() == EXPECTED_TYPESCRIPT


# -- tsc -----------------------------------------------------------------------------------------
@pytest.fixture
def ts_dir() -> Iterator[Path]:
    """A scratch folder inside tests/js, so that imports resolve to its node_modules."""
    if not (JS / "node_modules" / "typescript").is_dir():
        pytest.fail("tests/js/node_modules is missing: run `npm ci` in tests/js (as .ci/run does)")
    folder = JS / f".tmp-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "realtime-types.ts").write_text(EXPECTED_TYPESCRIPT)
    shutil.copy(ROOT / "flask_impulse" / "static" / "client.d.ts", folder / "client.d.ts")
    shutil.copy(ROOT / "flask_impulse" / "static" / "client.js", folder / "client.js")
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def tsc(folder: Path, source: str) -> subprocess.CompletedProcess[str]:
    (folder / "usage.ts").write_text(source)
    return subprocess.run(
        ["node", str(JS / "node_modules" / "typescript" / "bin" / "tsc"), "--noEmit", "--strict",
         "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext", "--lib", "es2022,dom",
         str(folder / "usage.ts")],
        cwd=folder, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


TS_CORRECT = """\
import { createRealtimeClient, createServerClient } from '@impulselab/realtime'
import { createRealtimeClient as createOurClient } from './client.js'
import type { RealtimeTypes } from './realtime-types.js'

const client = createRealtimeClient<RealtimeTypes>({ serviceUrl: 'http://localhost:8080' })
client.subscribe('chat:message', (event) => {
  const text: string = event.payload.text
  const author: string = event.payload.author.name
  console.log(text, author, event.payload.reactions?.['+1'])
}, { topic: 'room-1' })
const server = createServerClient<RealtimeTypes>({ serviceUrl: 'http://localhost:8080', token: 's' })
void server.push('notification:new', { id: 'n', type: 'warning', title: 't', message: 'm', userId: null })
void server.push('shapes', { name: 'line', points: [{ x: 0, y: 1 }] }, { topic: 'r' })

const options = { serviceUrl: 'http://localhost:8080/', retryAttempts: 3, heartbeatInterval: 30000 }
const ours = createOurClient<RealtimeTypes>(options)
ours.onConnectionState((state) => console.log(state === 'connected'))
ours.onError((error) => console.log(error.status, error.final))
const off = ours.subscribe('shapes', (event) => console.log(event.payload.points.length, event.id))
off()
console.log(ours.getStats().connections)
"""

TS_WRONG = """\
import { createServerClient } from '@impulselab/realtime'
import { createRealtimeClient } from './client.js'
import type { RealtimeTypes } from './realtime-types.js'

const server = createServerClient<RealtimeTypes>({ serviceUrl: 'http://localhost:8080', token: 's' })
void server.push('chat:message', { id: '1', author: { id: 'u', name: 'A' }, text: 3, timestamp: 1 })
const ours = createRealtimeClient<RealtimeTypes>({ serviceUrl: 'http://localhost:8080/' })
ours.subscribe('notification:new', (event) => console.log(event.payload.type === 'urgent'))
"""


def test_generated_types_compile_with_the_official_client_and_ours(ts_dir: Path) -> None:
    result = tsc(ts_dir, TS_CORRECT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_payload_against_the_generated_types_fails_to_compile(ts_dir: Path) -> None:
    result = tsc(ts_dir, TS_WRONG)
    assert result.returncode != 0
    errors = re.findall(r"usage\.ts\((\d+),\d+\): error (TS\d+)", result.stdout)
    assert errors == [("6", "TS2322"), ("8", "TS2367")], result.stdout


def test_the_entry_point_group_is_a_click_group() -> None:
    from flask_impulse.server.commands import impulse_group

    assert "typescript" in impulse_group.commands
    assert json.dumps(sorted(impulse_group.commands)) == '["typescript"]'


# -- a base install ----------------------------------------------------------------------------
def readme_typed_channel_snippet() -> str:
    """The Python block of the README's "Typed channels" section, as a user would copy it."""
    section = (ROOT / "README.md").read_text().split("## Typed channels", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


BASE_INSTALL_SCRIPT = """
import sys
from flask import Flask
import flask_impulse
from flask_impulse import InvalidPayload

try:
    import msgspec
except ImportError:
    pass
else:
    sys.exit("msgspec is installed: this is not a base install")

app = Flask(__name__)
lines = SNIPPET.rstrip().splitlines()
exec("\\n".join(lines[:-1]))
try:
    exec(lines[-1])  # the README's wrong push
except InvalidPayload as exc:
    print("README:", exc)
else:
    sys.exit("the README's wrong push was accepted")

if not flask_impulse.__file__.startswith(sys.prefix):
    sys.exit(f"flask_impulse comes from {flask_impulse.__file__}, not from the install")
sys.path.insert(0, DASHBOARD)
import app as dashboard

tick = {"time": "t", "tick": 1, "ordersPerMinute": 2, "revenue": 3.5, "loadAverage": [0.5], "subscribers": 0}
with dashboard.app.app_context():
    assert dashboard.impulse.push(dashboard.metrics, tick) == 0
    try:
        dashboard.impulse.push(dashboard.metrics, {**tick, "tick": "1"})
    except InvalidPayload as exc:
        print("dashboard:", exc)
    else:
        sys.exit("the dashboard accepted a wrong payload")
"""


@pytest.mark.tool
@pytest.mark.timeout(900)  # a venv and a pip install, on a machine that may be busy
def test_a_base_install_validates_the_readme_snippet_and_the_dashboard(tmp_path: Path) -> None:
    """``pip install`` of the checkout (not editable, no extras) in a fresh venv: the README's
    typed-channel snippet and examples/dashboard refuse a wrong payload with InvalidPayload."""
    source = tmp_path / "checkout"
    ignored = (".git", ".venv", "node_modules", "__pycache__", "build", "dist", "*.egg-info", ".*_cache", ".hypothesis")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*ignored))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    dashboard_dir = str(source / "examples" / "dashboard")
    script = f"SNIPPET = {readme_typed_channel_snippet()!r}\nDASHBOARD = {dashboard_dir!r}\n{BASE_INSTALL_SCRIPT}"
    # Run outside the checkout's copy, so that only the installed package can be imported.
    result = subprocess.run(
        [str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    readme, dashboard = result.stdout.splitlines()
    assert readme.startswith("README: ") and readme.endswith("payload.text: Expected `str`, got `int`")
    assert dashboard.startswith("dashboard: ") and dashboard.endswith("payload.tick: Expected `int`, got `str`")
