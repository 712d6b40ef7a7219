"""The npm package in js/: packed, installed from the tarball into an empty project, checked by
tsc against the types `flask-impulse typescript` emits, and pushing to a live service from Node."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service
from tests.support.server import ROOT, free_port
from tests.support.streams import SSEStream

pytestmark = pytest.mark.node

JS = ROOT / "js"
TSC = JS / "node_modules" / "typescript" / "bin" / "tsc"
ENTRY_POINTS = {"index", "realtime", "server", "react", "vue", "svelte"}


def run(command: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def npm(cwd: Path, *args: str) -> str:
    result = run(["npm", *args, "--no-audit", "--no-fund", "--loglevel=error"], cwd)
    assert result.returncode == 0, f"npm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``npm pack`` of js/: what the tarball holds, and its path."""
    if not TSC.is_file() or not (JS / "node_modules" / "esbuild").is_dir():
        pytest.fail("js/node_modules is missing: run `npm ci` in js/ (as .ci/run does)")
    destination = tmp_path_factory.mktemp("pack")
    [report] = json.loads(npm(JS, "pack", "--json", "--pack-destination", str(destination)))
    report["tarball"] = destination / report["filename"]
    return report  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def project(packed: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty project with the tarball installed, and the RealtimeTypes of the chat's channels."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "package.json").write_text(json.dumps({"name": "uses-flask-impulse", "private": True, "type": "module"}))
    npm(folder, "install", str(packed["tarball"]))
    emitted = run(
        [sys.executable, "-m", "flask_impulse", "typescript", "--app", "tests.typing_cases.chat_types",
         "-o", str(folder / "realtime-types.ts")],
        ROOT, timeout=60,
    )  # fmt: skip
    assert emitted.returncode == 0, emitted.stderr
    return folder


def node(project: Path, script: str, timeout: float = 60) -> Any:
    """Run ``script`` (an ES module) in ``project``; it prints one JSON line, its result."""
    (project / "script.mjs").write_text(script)
    result = run(["node", "script.mjs"], project, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def tsc(project: Path, source: str) -> subprocess.CompletedProcess[str]:
    (project / "usage.ts").write_text(source)
    return run(
        ["node", str(TSC), "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext",
         "--moduleResolution", "nodenext", "--lib", "es2022,dom", "usage.ts"],
        project, timeout=120,
    )  # fmt: skip


# -- the tarball ---------------------------------------------------------------------------------
def test_the_tarball_holds_every_entry_point_with_its_types_and_nothing_else(packed: dict[str, Any]) -> None:
    files = {entry["path"] for entry in packed["files"]}
    expected = {f"src/{name}.{ext}" for name in ENTRY_POINTS for ext in ("js", "d.ts")}
    assert files == expected | {"package.json", "README.md"}


def test_the_installed_package_resolves_each_entry_point(project: Path) -> None:
    manifest = json.loads((project / "node_modules" / "flask-impulse" / "package.json").read_text())
    assert set(manifest["exports"]) == {".", "./react", "./vue", "./svelte", "./package.json"}
    assert set(manifest["peerDependenciesMeta"]) == {"react", "vue", "svelte"}
    exported = node(project, "import * as m from 'flask-impulse'\nconsole.log(JSON.stringify(Object.keys(m).sort()))")
    assert exported == ["RETRIED_STATUSES", "RealtimeError", "ServerClientError", "createRealtimeClient",
                        "createServerClient"]  # fmt: skip
    # No framework is installed: the bindings import theirs only when used.
    assert not (project / "node_modules" / "react").exists()


def test_the_served_browser_client_is_the_committed_fresh_build(tmp_path: Path) -> None:
    result = run(["node", str(JS / "scripts" / "build.mjs"), str(tmp_path)], JS, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in ("client.js", "client.d.ts"):
        fresh = (tmp_path / name).read_text()
        assert fresh == (ROOT / "flask_impulse" / "static" / name).read_text(), f"run `npm run build` in js/ ({name})"
    assert "export {" in (tmp_path / "client.js").read_text()


def test_the_npm_package_has_the_python_package_version() -> None:
    import flask_impulse

    assert json.loads((JS / "package.json").read_text())["version"] == flask_impulse.__version__


# -- types -----------------------------------------------------------------------------------------
TS_CORRECT = """\
import { createRealtimeClient, createServerClient, type RealtimeError } from 'flask-impulse'
import type { RealtimeTypes } from './realtime-types.js'

const client = createRealtimeClient<RealtimeTypes>({ serviceUrl: 'http://localhost:8080/', retryAttempts: 3 })
const off = client.subscribe('chat:message', (event) => {
  const text: string = event.payload.text
  console.log(text, event.payload.author.name, event.id, event.topic)
}, { topic: 'room-1' })
off()
client.onConnectionState((state) => console.log(state === 'connected'))
client.onError((error: RealtimeError) => console.log(error.status, error.final, error.missedMessages))
console.log(client.getStats().connections)
const leave = client.onPresence('chat:message', (event) => {
  const action: 'join' | 'leave' = event.action
  console.log(event.channel, event.member, action)
}, { token: 't' })
leave()

const server = createServerClient<RealtimeTypes>({ serviceUrl: 'http://localhost:8080/', token: 's' })
const sent: Promise<number> = server.push('shapes', { name: 'line', points: [{ x: 0, y: 1 }] }, { topic: 'r' })
void sent
void server.publish('notification:new', { id: 'n', type: 'info', title: 't', message: 'm' }, { idempotencyKey: 'k' })
void server.pushMany([
  { channel: 'shapes', payload: { name: 'dot', points: [] } },
  { channel: 'notification:new', payload: { id: 'n', type: 'error', title: 't', message: 'm' }, tokens: ['u1'] },
])
"""

TS_WRONG = """\
import { createRealtimeClient, createServerClient } from 'flask-impulse'
import type { RealtimeTypes } from './realtime-types.js'

const server = createServerClient<RealtimeTypes>({ serviceUrl: 'http://localhost:8080/', token: 's' })
void server.push('chat:message', { id: '1', author: { id: 'u', name: 'A' }, text: 3, timestamp: 1 })
void server.pushMany([{ channel: 'shapes', payload: { name: 'dot' } }])
const client = createRealtimeClient<RealtimeTypes>({ serviceUrl: 'http://localhost:8080/' })
client.subscribe('notification:new', (event) => console.log(event.payload.type === 'urgent'))
client.subscribe('no:such:channel', () => {})
client.onPresence('no:such:channel', () => {})
client.onPresence('shapes', (event) => console.log(event.action === 'kicked'))
"""


def test_a_typed_use_of_the_installed_package_compiles(project: Path) -> None:
    result = tsc(project, TS_CORRECT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_payload_fails_to_compile(project: Path) -> None:
    result = tsc(project, TS_WRONG)
    assert result.returncode != 0
    lines = sorted({int(line) for line in re.findall(r"usage\.ts\((\d+),\d+\): error TS\d+", result.stdout)})
    assert lines == [5, 6, 8, 9, 10, 11], result.stdout


@pytest.fixture(scope="module")
def frameworks(packed: dict[str, Any], project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another project, with the tarball, React and its types, Vue and Svelte: the optional peers."""
    folder = tmp_path_factory.mktemp("frameworks")
    (folder / "package.json").write_text(json.dumps({"name": "uses-the-bindings", "private": True, "type": "module"}))
    npm(folder, "install", str(packed["tarball"]), "react@18", "@types/react@18", "vue@3", "svelte@4")
    shutil.copy(project / "realtime-types.ts", folder / "realtime-types.ts")
    return folder


TS_BINDINGS = """\
import { createElement } from 'react'
import { createRealtimeClient, type ConnectionState } from 'flask-impulse'
import { RealtimeProvider, useConnectionState, useRealtime, useRealtimeClient } from 'flask-impulse/react'
import { provideRealtimeClient, useConnectionState as useVueState } from 'flask-impulse/vue'
import { useRealtime as useVueRealtime } from 'flask-impulse/vue'
import { connectionState, realtimeEvents } from 'flask-impulse/svelte'
import type { RealtimeTypes } from './realtime-types.js'

const client = createRealtimeClient<RealtimeTypes>({ serviceUrl: '/realtime/' })
export function Messages() {
  const state: ConnectionState = useConnectionState()
  const show = (text: string) => console.log(text)
  useRealtime<RealtimeTypes, 'chat:message'>('chat:message', (event) => show(event.payload.text), { topic: 'r' })
  useRealtimeClient<RealtimeTypes>().subscribe('shapes', (event) => console.log(event.payload.points.length))
  return createElement('p', null, state)
}
createElement(RealtimeProvider, { client }, createElement(Messages))
createElement(RealtimeProvider, { options: { serviceUrl: '/realtime/' } })

provideRealtimeClient(client)
useVueRealtime<RealtimeTypes, 'notification:new'>('notification:new', (event) => console.log(event.payload.title))
const vueState: ConnectionState = useVueState().value
console.log(vueState)

const latest = realtimeEvents(client, 'chat:message', { limit: 10 })
latest.subscribe((events) => console.log(events.map((event) => event.payload.author.name)))
connectionState(client).subscribe((state) => console.log(state === 'connected'))
"""

TS_BINDINGS_WRONG = """\
import { createRealtimeClient } from 'flask-impulse'
import { useRealtime } from 'flask-impulse/react'
import { useRealtime as useVueRealtime } from 'flask-impulse/vue'
import { realtimeEvents } from 'flask-impulse/svelte'
import type { RealtimeTypes } from './realtime-types.js'

const client = createRealtimeClient<RealtimeTypes>({ serviceUrl: '/realtime/' })
useRealtime<RealtimeTypes, 'chat:message'>('chat:message', (event) => console.log(event.payload.text.toFixed()))
useVueRealtime<RealtimeTypes, 'shapes'>('notification:new', () => {})
realtimeEvents(client, 'chat:message').subscribe((events) => console.log(events[0].payload.title))
"""


def test_the_bindings_are_typed_by_the_generated_types(frameworks: Path) -> None:
    result = tsc(frameworks, TS_BINDINGS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_payload_through_the_bindings_fails_to_compile(frameworks: Path) -> None:
    result = tsc(frameworks, TS_BINDINGS_WRONG)
    lines = sorted({int(line) for line in re.findall(r"usage\.ts\((\d+),\d+\): error TS\d+", result.stdout)})
    assert lines == [8, 9, 10], result.stdout


SVELTE = """\
import { createRealtimeClient, createServerClient } from 'flask-impulse'
import { connectionState, realtimeEvents } from 'flask-impulse/svelte'

setTimeout(() => { console.log(JSON.stringify({ error: 'not received in time' })); process.exit(1) }, 30000)
const { SERVICE_URL: serviceUrl, SECRET: token, CHANNEL: channel } = process.env
const client = createRealtimeClient({ serviceUrl })
const states = []
const stopStates = connectionState(client).subscribe((state) => states.push(state))
let pushed = false
const stopEvents = realtimeEvents(client, channel, { limit: 2 }).subscribe(async (events) => {
  if (events.some((event) => event.payload.n === 3)) {
    stopEvents()
    await Promise.resolve() // the unsubscribe is applied in a microtask
    const stats = client.getStats()
    stopStates()
    console.log(JSON.stringify({ states, events: events.map((event) => event.payload.n), stats }))
    process.exit(0)
  }
})
connectionState(client).subscribe(async (state) => {
  if (state !== 'connected' || pushed) return
  pushed = true
  await createServerClient({ serviceUrl, token }).pushMany([1, 2, 3].map((n) => ({ channel, payload: { n } })))
})
"""


def test_the_svelte_stores_follow_a_live_service(frameworks: Path, standalone: Service) -> None:
    (frameworks / "script.mjs").write_text(SVELTE)
    environment = {"SERVICE_URL": standalone.base, "SECRET": standalone.secret, "CHANNEL": f"svelte-{free_port()}"}
    result = subprocess.run(["node", "script.mjs"], cwd=frameworks, capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, **environment})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["events"] == [2, 3]  # the latest two, oldest first
    assert outcome["states"][:2] == ["disconnected", "connecting"] and "connected" in outcome["states"]
    assert outcome["stats"]["subscriptions"] == 0  # the last store subscriber gone, the client unsubscribed


VUE = """\
import { createRenderer, h, nextTick, ref } from 'vue'
import { createRealtimeClient, createServerClient } from 'flask-impulse'
import { provideRealtimeClient, useConnectionState, useRealtime } from 'flask-impulse/vue'

setTimeout(() => { console.log(JSON.stringify({ error: 'timed out', ...outcome })); process.exit(1) }, 30000)
const { SERVICE_URL: serviceUrl, SECRET: token, CHANNEL: channel } = process.env
const until = async (condition) => { while (!condition()) await new Promise((wake) => setTimeout(wake, 20)) }
const outcome = { subscribes: 0, unsubscribes: 0, received: [] }

// A renderer on plain objects: Vue's own mount, update and unmount, without a DOM.
const insert = (child, parent, anchor) => {
  child.parent = parent
  const at = anchor ? parent.children.indexOf(anchor) : -1
  at < 0 ? parent.children.push(child) : parent.children.splice(at, 0, child)
}
const { createApp } = createRenderer({
  createElement: (tag) => ({ tag, children: [], text: '' }),
  createText: (text) => ({ tag: '#text', children: [], text }),
  createComment: (text) => ({ tag: '#comment', children: [], text }),
  setText: (node, text) => { node.text = text },
  setElementText: (node, text) => { node.text = text },
  insert,
  remove: (child) => { child.parent?.children.splice(child.parent.children.indexOf(child), 1) },
  parentNode: (node) => node.parent ?? null,
  nextSibling: (node) => node.parent?.children[node.parent.children.indexOf(node) + 1] ?? null,
  patchProp: () => {},
})

const client = createRealtimeClient({ serviceUrl })
const subscribe = client.subscribe
client.subscribe = (...args) => {
  outcome.subscribes += 1
  const off = subscribe(...args)
  return () => { outcome.unsubscribes += 1; off() }
}
const Listener = {
  props: ['label'],
  setup(props) {
    // The handler reads the props of the latest render: a new label needs no new subscription.
    useRealtime(channel, (event) => outcome.received.push(`${props.label}:${event.payload.n}`))
    const state = useConnectionState()
    return () => h('p', state.value)
  },
}
const label = ref('first')
const shown = ref(true)
const App = {
  setup() {
    provideRealtimeClient(client)
    return () => h('main', shown.value ? h(Listener, { label: label.value }) : null)
  },
}
const root = { tag: 'root', children: [] }
outcome.beforeMount = outcome.subscribes
createApp(App).mount(root)
outcome.afterMount = outcome.subscribes
const main = root.children[0]
await until(() => main.children[0]?.text === 'connected')
const server = createServerClient({ serviceUrl, token })
outcome.sent = [await server.push(channel, { n: 1 })]
await until(() => outcome.received.length === 1)
label.value = 'second'
await nextTick()
outcome.sent.push(await server.push(channel, { n: 2 }))
await until(() => outcome.received.length === 2)
outcome.beforeUnmount = { ...client.getStats() }
shown.value = false
await nextTick()
outcome.afterUnmount = client.getStats()
// The server notices the closed stream on its own schedule: push until nobody receives.
while ((await server.push(channel, { n: 0 })) !== 0) await new Promise((wake) => setTimeout(wake, 50))
outcome.received.push('nobody')
console.log(JSON.stringify(outcome))
process.exit(0)
"""


def test_the_vue_composable_subscribes_on_mount_keeps_the_latest_handler_and_unsubscribes_on_unmount(
    frameworks: Path, standalone: Service
) -> None:
    (frameworks / "script.mjs").write_text(VUE)
    environment = {"SERVICE_URL": standalone.base, "SECRET": standalone.secret, "CHANNEL": f"vue-{free_port()}"}
    result = subprocess.run(["node", "script.mjs"], cwd=frameworks, capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, **environment})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["beforeMount"], outcome["afterMount"]) == (0, 1)
    assert outcome["sent"] == [1, 1]
    assert outcome["received"] == ["first:1", "second:2", "nobody"]  # the re-rendered label, no event lost
    assert outcome["subscribes"] == 1 and outcome["unsubscribes"] == 1  # the new props resubscribed nothing
    assert outcome["beforeUnmount"]["connections"] == 1 and outcome["beforeUnmount"]["reconnects"] == 0
    assert outcome["afterUnmount"]["subscriptions"] == 0


# -- createServerClient ----------------------------------------------------------------------------
PUSHES = """\
import { createServerClient } from 'flask-impulse'

const server = createServerClient({ serviceUrl: process.env.SERVICE_URL, token: process.env.SECRET })
const channel = process.env.CHANNEL
const results = {}
results.push = await server.push(channel, { n: 1 })
results.many = await server.pushMany([
  { channel, payload: { n: 2 } },
  { channel, payload: { n: 3 }, idempotencyKey: 'batch-key' },
])
results.first = await server.publish(channel, { n: 4 }, { idempotencyKey: 'single-key' })
results.again = await server.publish(channel, { n: 4 }, { idempotencyKey: 'single-key' })
results.last = await server.push(channel, { n: 5 })
results.retries = server.retries
console.log(JSON.stringify(results))
"""


def test_server_client_from_the_tarball_pushes_to_a_live_service(project: Path, standalone: Service) -> None:
    channel = f"npm-{free_port()}"
    with SSEStream(standalone.base, {"channel": channel}) as stream:
        assert stream.status == 200
        (project / "script.mjs").write_text(PUSHES)
        environment = {"SERVICE_URL": standalone.base, "SECRET": standalone.secret, "CHANNEL": channel}
        result = subprocess.run(["node", "script.mjs"], cwd=project, capture_output=True, text=True, timeout=60,
                                check=False, env={**os.environ, **environment})  # fmt: skip
        assert result.returncode == 0, result.stderr
        results = json.loads(result.stdout)
        received = stream.messages(5, timeout=15)
    assert [message["payload"]["n"] for message in received] == [1, 2, 3, 4, 5]  # the repeat delivered nothing
    assert {message["channel"] for message in received} == {channel}
    assert (results["push"], results["many"], results["last"], results["retries"]) == (1, [1, 1], 1, 0)
    assert results["first"]["sent"] == 1 and not results["first"]["duplicate"]
    assert results["again"] == {**results["first"], "duplicate": True}


class FlakyService(ThreadingHTTPServer):
    """Answers the first pushes with the statuses given, then 200; records each request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[str | None, Any]] = []
        super().__init__(("127.0.0.1", 0), FlakyHandler)


class FlakyHandler(BaseHTTPRequestHandler):
    server: FlakyService

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.headers.get("Idempotency-Key"), body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        answer = {"sent": 1, "id": "7"} if status == 200 else {"error": "Outcome unknown"}
        if status == 200 and isinstance(body, list):
            answer = {"results": [{"sent": 1, "id": str(n)} for n, _ in enumerate(body)]}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on what was requested."""


@pytest.fixture
def flaky() -> Iterator[FlakyService]:
    service = FlakyService([])
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.shutdown()
        service.server_close()
        thread.join(10)


RETRIES = """\
import { createServerClient } from 'flask-impulse'

const server = createServerClient({ serviceUrl: 'URL', token: 's', backoff: 1, maxBackoff: 5 })
const results = { sent: await server.push('a', 1), many: await server.pushMany([{ channel: 'b', payload: 2 }]) }
try {
  await server.push('c', 3)
} catch (error) {
  results.refused = [error.name, error.status, error.message]
}
results.retries = server.retries
console.log(JSON.stringify(results))
"""


def test_server_client_retries_unknown_outcomes_under_the_same_key_and_never_a_4xx(
    project: Path, flaky: FlakyService
) -> None:
    flaky.statuses = [503, 502, 200, 504, 200, 400]
    results = node(project, RETRIES.replace("URL", f"http://127.0.0.1:{flaky.server_address[1]}/"))
    assert results == {"sent": 1, "many": [1], "refused": ["ServerClientError", 400, "HTTP 400: Outcome unknown"],
                       "retries": 3}  # fmt: skip
    single = [key for key, body in flaky.requests[:3]]
    assert len(set(single)) == 1 and re.fullmatch(r'"[0-9a-f-]{36}"', single[0] or ""), single
    batch_keys = [body[0]["idempotencyKey"] for _key, body in flaky.requests[3:5]]
    assert batch_keys[0] == batch_keys[1] and flaky.requests[3][0] is None
    assert len(flaky.requests) == 6  # the 400 was not retried


# -- createRealtimeClient in Node ------------------------------------------------------------------
ERRORS = """\
import { createRealtimeClient } from 'flask-impulse'

setTimeout(() => { console.log(JSON.stringify({ error: 'no final error in time' })); process.exit(1) }, 30000)
const client = createRealtimeClient({ serviceUrl: 'URL', retryAttempts: 1, retryDelay: 10 })
const errors = []
client.onError((error) => {
  errors.push([error.final, error.status ?? null])
  // Anything else reported for this failure is reported in the same turn: look after it.
  if (error.final) setTimeout(() => { console.log(JSON.stringify(errors)); process.exit(0) }, 50)
})
client.subscribe('ch', () => {})
"""


@pytest.mark.parametrize("failure", ["refused", "unreachable"])
def test_on_error_hears_each_final_error_once(project: Path, standalone: Service, failure: str) -> None:
    if failure == "refused":  # a 404: final at once
        errors = node(project, ERRORS.replace("URL", standalone.base + "no/such/endpoint"))
        assert errors == [[True, 404]]
    else:  # a closed port: one passing error, one reconnect, then the final one
        errors = node(project, ERRORS.replace("URL", f"http://127.0.0.1:{free_port()}/"))
        assert errors == [[False, None], [True, None]]


PRESENCE = """\
import { createRealtimeClient } from 'flask-impulse'

const base = 'URL'
const seen = []
setTimeout(() => { console.log(JSON.stringify({ error: 'not done in time', seen })); process.exit(1) }, 30000)
const client = createRealtimeClient({ serviceUrl: base, retryDelay: 50 })
let alice = null
client.subscribe('room:node', (event) => {
  seen.push(['message', event.channel, event.payload])
  console.log(JSON.stringify(seen))
  process.exit(0)
})
client.onPresence('room:node', async (event) => {
  seen.push(['presence', event.channel, event.member, event.action])
  if (event.action === 'join') alice.abort()  // her only stream ends: she leaves
  else await fetch(base, { method: 'POST', headers: { Authorization: 'Bearer SECRET' },
                           body: JSON.stringify({ channel: 'room:node', payload: 'after' }) })
})
const off = client.onConnectionState(async (state) => {
  if (state !== 'connected') return
  off()
  alice = new AbortController()
  try {
    // Her join may arrive, and abort this, before the answer's headers do.
    const response = await fetch(base + '?channel=room:node&clientId=alice', { signal: alice.signal })
    const reader = response.body.getReader()
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read());
  } catch (error) {
    if (error.name !== 'AbortError') throw error
  }
})
"""


def test_on_presence_hears_join_and_leave_and_messages_stay_with_subscribe(project: Path) -> None:
    from tests.conftest import SECRET, serve

    with serve("wsgi:app", "npm-presence", REALTIME_SECRET=SECRET, IMPULSE_PRESENCE_CHANNELS="room:*") as service:
        seen = node(project, PRESENCE.replace("URL", service.base).replace("SECRET", SECRET))
    assert seen == [
        ["presence", "room:node", "alice", "join"],
        ["presence", "room:node", "alice", "leave"],
        ["message", "room:node", "after"],
    ]
