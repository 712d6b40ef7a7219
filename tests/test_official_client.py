"""The official npm client, ``@impulselab/realtime@0.1.1`` in Node 20 with the npm ``eventsource``
as its global ``EventSource``, works unchanged against flask-impulse (docs/protocol.md section 1).

One Node run per mounting (standalone at ``/``, embedded under ``/realtime``) plays every
scenario below; each test then checks one behaviour in that run's results. Handlers are told
apart by name; a final broadcast ``END`` closes each stream's list, and since a connection
gets its messages in push order, nothing can arrive for a scenario after its ``END``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flask_impulse.validation import PUSH_KEYS
from tests.conftest import SECRET, Service
from tests.support.official_client import ScenarioResult, Step, run_scenarios
from tests.support.server import LiveServer

pytestmark = [pytest.mark.live, pytest.mark.node]

END = "END"

PAYLOADS: list[Any] = [
    {"nested": {"list": [1, 2.5, None, True, False], "deep": {"deeper": {"x": "y"}}}, "empty": {}, "none": []},
    "unicode: héllo wörld ✓ 日本語 🎉 Ωμέγα",
    "multi\nline\r\npayload\rwith\n\nblank lines",
    {"looks like SSE": '\n\ndata: {"channel":"other"}\n\n', "emoji key 🔑": "value"},
    [1, "two", {"three": 3}],
    None,
    0,
    -1.5,
    False,
    "",
    9007199254740991,
    # Valid JSON, and JSON.stringify writes it ("\ud800"): it must pass through, not fail as UTF-8.
    {"lone surrogates": "a\ud800b\udfff", "key \udc00": 1},
]

#: Subscribers of the routing scenario: (handler, token, topic).
SUBSCRIBERS = [
    ("plain", None, None),
    ("room1", None, "room1"),
    ("alice", "alice", None),
    ("alice_room1", "alice", "room1"),
    ("bob_room2", "bob", "room2"),
    ("unicode", "jéton 🎫 &=?", "salle à manger #1 + 2"),
]
#: Pushes of the routing scenario: (label, audience, the handlers it must reach).
ROUTES: list[tuple[str, dict[str, Any] | None, set[str]]] = [
    ("everyone", None, {name for name, _, _ in SUBSCRIBERS}),
    ("topic-room1", {"topic": "room1"}, {"room1", "alice_room1"}),
    ("topic-nobody", {"topic": "room3"}, set()),
    ("token-string", {"tokens": "alice"}, {"alice", "alice_room1"}),
    ("token-list", {"tokens": ["alice", "bob"]}, {"alice", "alice_room1", "bob_room2"}),
    ("token-and-topic", {"tokens": ["alice"], "topic": "room1"}, {"alice_room1"}),
    ("token-and-other-topic", {"tokens": ["bob"], "topic": "room1"}, set()),
    ("unicode-token-and-topic", {"tokens": ["jéton 🎫 &=?"], "topic": "salle à manger #1 + 2"}, {"unicode"}),
]


@dataclass
class Run:
    """One Node run's results, and the channel names it used."""

    channels: dict[str, str]
    scenarios: dict[str, ScenarioResult]


def build_scenarios(channels: dict[str, str]) -> dict[str, list[Step]]:
    c = channels
    roundtrip: list[Step] = [
        {"do": "subscribe", "client": "a", "as": "rt", "channel": c["roundtrip"]},
        {"do": "subscribe", "client": "b", "as": "special", "channel": c["special"]},
        {"do": "opened"},
        *({"do": "push", "channel": c["roundtrip"], "payload": payload} for payload in PAYLOADS),
        {"do": "push", "label": "no-payload", "channel": c["roundtrip"]},
        {"do": "push", "channel": c["roundtrip"], "payload": END},
        {"do": "push", "channel": c["special"], "payload": END},
        {"do": "await", "counts": {"rt": len(PAYLOADS) + 2, "special": 1}},
    ]
    routing: list[Step] = [
        *(
            {"do": "subscribe", "client": name, "as": name, "channel": c["routing"], "token": token, "topic": topic}
            for name, token, topic in SUBSCRIBERS
        ),
        {"do": "opened"},
        *(
            {"do": "push", "channel": c["routing"], "payload": label, **({"audience": aud} if aud else {})}
            for label, aud, _ in ROUTES
        ),
        {"do": "push", "channel": c["routing"], "payload": END},
        {"do": "await", "counts": {name: _routed_to(name) + 1 for name, _, _ in SUBSCRIBERS}},
    ]
    several = [c["many-a"], c["many-b"], c["many-c"]]
    channels_scenario: list[Step] = [
        {"do": "subscribe", "client": "m", "as": "a1", "channel": several[0]},
        {"do": "subscribe", "client": "m", "as": "a2", "channel": several[0]},
        {"do": "subscribe", "client": "m", "as": "b", "channel": several[1]},
        {"do": "subscribe", "client": "m", "as": "c", "channel": several[2]},
        {"do": "opened"},
        {"do": "eventSources", "label": "sources"},
        *({"do": "push", "channel": several[i % 3], "payload": i} for i in range(12)),
        *({"do": "push", "channel": channel, "payload": END} for channel in several),
        {"do": "await", "counts": {"a1": 5, "a2": 5, "b": 5, "c": 5}},
    ]
    unsubscribe: list[Step] = [
        {"do": "subscribe", "client": "u", "as": "h1", "channel": c["u1"]},
        {"do": "subscribe", "client": "u", "as": "h2", "channel": c["u1"]},
        {"do": "subscribe", "client": "u", "as": "k", "channel": c["u2"]},
        {"do": "subscribe", "client": "u", "as": "m", "channel": c["u3"]},
        *({"do": "subscribe", "client": "v", "as": f"v{i}", "channel": c[f"v{i}"]} for i in range(3)),
        *({"do": "subscribe", "client": "w", "as": f"w{i}", "channel": c[f"w{i}"]} for i in range(2)),
        {"do": "opened"},
        # The returned function drops one handler; the stream stays while another remains.
        {"do": "unsubscribe", "as": "h1"},
        {"do": "post", "label": "u1-one-handler-left", "body": {"channel": c["u1"], "payload": "still"}},
        {"do": "await", "counts": {"h2": 1}},
        {"do": "unsubscribe", "label": "returned-function", "as": "h2", "frees": 1},
        {"do": "post", "label": "u1-after", "body": {"channel": c["u1"], "payload": "gone"}},
        {"do": "unsubscribeAll", "label": "unsubscribeAll", "client": "u", "channel": c["u2"], "frees": 1},
        {"do": "post", "label": "u2-after", "body": {"channel": c["u2"], "payload": "gone"}},
        {"do": "post", "label": "u3-untouched", "body": {"channel": c["u3"], "payload": "still"}},
        {"do": "await", "counts": {"m": 1}},
        {"do": "unsubscribeChannel", "label": "unsubscribe", "client": "u", "channel": c["u3"], "frees": 1},
        {"do": "post", "label": "u3-after", "body": {"channel": c["u3"], "payload": "gone"}},
        {"do": "unsubscribeAllChannels", "label": "unsubscribeAllChannels", "client": "v", "frees": 3},
        *({"do": "post", "label": f"v{i}-after", "body": {"channel": c[f"v{i}"], "payload": "gone"}} for i in range(3)),
        {"do": "close", "label": "close", "client": "w", "frees": 2},
        *({"do": "post", "label": f"w{i}-after", "body": {"channel": c[f"w{i}"], "payload": "gone"}} for i in range(2)),
    ]
    errors: list[Step] = [
        {"do": "subscribe", "client": "e", "as": "e", "channel": c["errors"]},
        {"do": "opened"},
        {"do": "push", "label": "no-token", "channel": c["errors"], "payload": 1, "token": None},
        {"do": "push", "label": "wrong-token", "channel": c["errors"], "payload": 2, "token": "wrong"},
        {
            "do": "pushMany",
            "label": "many-wrong-token",
            "token": "wrong",
            "events": [{"channel": c["errors"], "payload": 3}, {"channel": c["errors"], "payload": 4}],
        },
        {"do": "push", "label": "bad-tokens", "channel": c["errors"], "payload": 5, "audience": {"tokens": 42}},
        {"do": "push", "label": "empty-topic", "channel": c["errors"], "payload": 6, "audience": {"topic": ""}},
        # null is not absent (the reference refuses it too): never a broadcast to the whole channel.
        {"do": "push", "label": "null-tokens", "channel": c["errors"], "payload": 6, "audience": {"tokens": None}},
        {"do": "push", "label": "null-audience", "channel": c["errors"], "payload": 6, "audience": None},
        # The strict schema: a misspelled key is refused, never a broadcast.
        {"do": "push", "label": "misspelled-tokens", "channel": c["errors"], "payload": 6, "audience": {"Tokens": "a"}},
        {"do": "post", "label": "raw-no-token", "token": None, "body": {"channel": c["errors"], "payload": 7}},
        {"do": "post", "label": "raw-wrong-token", "token": "wrong", "body": {"channel": c["errors"], "payload": 8}},
        {"do": "post", "label": "raw-not-json", "raw": '{"channel": "' + c["errors"] + '", payload'},
        {"do": "post", "label": "raw-no-channel", "body": {"payload": 9}},
        {"do": "post", "label": "raw-bad-tokens", "body": {"channel": c["errors"], "audience": {"tokens": ["a", 3]}}},
        {"do": "post", "label": "raw-surrogate-channel", "body": {"channel": c["errors"] + "\ud800", "payload": 10}},
        {
            "do": "post",
            "label": "raw-surrogate-token",
            "body": {"channel": c["errors"], "audience": {"tokens": "\udfff"}},
        },
        {"do": "push", "label": "valid", "channel": c["errors"], "payload": END},
        {"do": "await", "counts": {"e": 1}},
    ]
    counts: list[Step] = [
        {"do": "post", "label": "nobody", "body": {"channel": c["counts"], "payload": 0}},
        {"do": "subscribe", "client": "k1", "as": "k1", "channel": c["counts"]},
        {"do": "subscribe", "client": "k2", "as": "k2", "channel": c["counts"], "topic": "t"},
        {"do": "subscribe", "client": "k3", "as": "k3", "channel": c["counts"], "token": "alice"},
        {"do": "opened"},
        {"do": "post", "label": "all", "body": {"channel": c["counts"], "payload": 1}},
        {"do": "post", "label": "topic", "body": {"channel": c["counts"], "payload": 2, "audience": {"topic": "t"}}},
        {
            "do": "post",
            "label": "token",
            "body": {"channel": c["counts"], "payload": 3, "audience": {"tokens": "alice"}},
        },
        {
            "do": "post",
            "label": "token-and-topic",
            "body": {"channel": c["counts"], "payload": 4, "audience": {"tokens": ["alice"], "topic": "t"}},
        },
        {"do": "post", "label": "other-channel", "body": {"channel": c["counts"] + "-other", "payload": 5}},
        {
            "do": "pushMany",
            "label": "pushMany",
            "events": [{"channel": c["counts"], "payload": 6}, {"channel": c["counts"], "payload": 7}],
        },
        {"do": "await", "counts": {"k1": 3, "k2": 4, "k3": 4}},
    ]
    return {
        "roundtrip": roundtrip,
        "routing": routing,
        "channels": channels_scenario,
        "unsubscribe": unsubscribe,
        "errors": errors,
        "counts": counts,
    }


def _routed_to(handler: str) -> int:
    return sum(1 for _, _, reached in ROUTES if handler in reached)


@pytest.fixture(scope="module", params=["standalone", "embedded"])
def official(request: pytest.FixtureRequest) -> Run:
    """Every scenario, played once per mounting by the official client."""
    service: Service = request.getfixturevalue(request.param)
    suffix = uuid.uuid4().hex[:8]
    names = ["roundtrip", "routing", "many-a", "many-b", "many-c", "u1", "u2", "u3", "errors", "counts"]
    names += [f"v{i}" for i in range(3)] + [f"w{i}" for i in range(2)]
    channels = {name: f"{name}-{suffix}" for name in names}
    channels["special"] = f"salle é/🎉 & ?=#+%20-{suffix}"
    scenarios = run_scenarios(service.base, service.server.health_url, service.secret, build_scenarios(channels))
    return Run(channels, scenarios)


def completed(run: Run, name: str) -> ScenarioResult:
    """A scenario that ran to its end: every stream opened, every awaited event came."""
    scenario = run.scenarios[name]
    rejected = [step for step in scenario.steps if step.get("rejected")]
    assert scenario.stopped is None, f"{name}: {scenario.stopped}: {scenario.steps[-1]}; rejected: {rejected}"
    return scenario


# -- roundtrip -------------------------------------------------------------------------------
def test_payloads_arrive_intact_and_in_order(official: Run) -> None:
    scenario = completed(official, "roundtrip")
    assert scenario.payloads("rt") == [*PAYLOADS, "<none>", END]
    assert {event["channel"] for event in scenario.received["rt"]} == {official.channels["roundtrip"]}
    assert all(step.get("rejected") is None for step in scenario.steps if step["do"] == "push")


def test_push_without_payload_arrives_without_one(official: Run) -> None:
    scenario = completed(official, "roundtrip")
    assert scenario.received["rt"][len(PAYLOADS)] == {"channel": official.channels["roundtrip"]}


def test_channel_name_with_url_special_characters(official: Run) -> None:
    scenario = completed(official, "roundtrip")
    assert scenario.received["special"] == [{"channel": official.channels["special"], "payload": END}]


# -- routing ---------------------------------------------------------------------------------
def _reached(scenario: ScenarioResult, label: str) -> set[str]:
    return {name for name, _, _ in SUBSCRIBERS if label in scenario.payloads(name)}


def test_push_without_audience_reaches_every_subscriber_of_the_channel(official: Run) -> None:
    scenario = completed(official, "routing")
    assert _reached(scenario, "everyone") == {name for name, _, _ in SUBSCRIBERS}


def test_topic_reaches_only_that_topic(official: Run) -> None:
    scenario = completed(official, "routing")
    assert _reached(scenario, "topic-room1") == {"room1", "alice_room1"}
    assert _reached(scenario, "topic-nobody") == set()


def test_tokens_reach_only_those_tokens(official: Run) -> None:
    scenario = completed(official, "routing")
    assert _reached(scenario, "token-string") == {"alice", "alice_room1"}
    assert _reached(scenario, "token-list") == {"alice", "alice_room1", "bob_room2"}


def test_tokens_and_topic_together_need_both(official: Run) -> None:
    scenario = completed(official, "routing")
    assert _reached(scenario, "token-and-topic") == {"alice_room1"}
    assert _reached(scenario, "token-and-other-topic") == set()
    assert _reached(scenario, "unicode-token-and-topic") == {"unicode"}


def test_each_subscriber_gets_its_messages_once_in_push_order(official: Run) -> None:
    scenario = completed(official, "routing")
    for name, _, _ in SUBSCRIBERS:
        expected = [label for label, _, reached in ROUTES if name in reached]
        assert scenario.payloads(name) == [*expected, END], name


# -- several channels ------------------------------------------------------------------------
def test_several_channels_at_once_never_cross(official: Run) -> None:
    scenario = completed(official, "channels")
    assert scenario.payloads("a1") == [0, 3, 6, 9, END]
    assert scenario.payloads("a2") == [0, 3, 6, 9, END]
    assert scenario.payloads("b") == [1, 4, 7, 10, END]
    assert scenario.payloads("c") == [2, 5, 8, 11, END]
    assert {e["channel"] for e in scenario.received["b"]} == {official.channels["many-b"]}
    sources = scenario.step("sources")["eventSources"]
    assert len(sources) == 3 and all(source["opens"] == 1 for source in sources)


# -- unsubscribe -----------------------------------------------------------------------------
def test_returned_function_keeps_the_stream_while_a_handler_remains(official: Run) -> None:
    scenario = completed(official, "unsubscribe")
    assert scenario.step("u1-one-handler-left")["body"]["sent"] == 1
    assert scenario.payloads("h1") == []
    assert scenario.payloads("h2") == ["still"]


@pytest.mark.parametrize(
    ("label", "channels"),
    [
        ("returned-function", ["u1"]),
        ("unsubscribeAll", ["u2"]),
        ("unsubscribe", ["u3"]),
        ("unsubscribeAllChannels", ["v0", "v1", "v2"]),
        ("close", ["w0", "w1"]),
    ],
)
def test_unsubscribing_frees_the_server_connection_promptly(official: Run, label: str, channels: list[str]) -> None:
    scenario = completed(official, "unsubscribe")
    step = scenario.step(label)
    assert step["freed"], step
    assert step["after"] <= step["before"] - len(channels)
    for channel in channels:
        assert scenario.step(f"{channel}-after")["body"]["sent"] == 0, channel


def test_unsubscribing_one_channel_leaves_the_others(official: Run) -> None:
    scenario = completed(official, "unsubscribe")
    assert scenario.step("u3-untouched")["body"]["sent"] == 1
    assert scenario.payloads("m") == ["still"]
    assert scenario.payloads("k") == []


def test_closing_the_clients_frees_every_server_connection(official: Run) -> None:
    # Each scenario ends with client.close() on all its clients and waits, with a deadline,
    # for /health to count no more connections than when the scenario began.
    assert {name: scenario.released for name, scenario in official.scenarios.items()} == dict.fromkeys(
        official.scenarios, True
    )


# -- errors ----------------------------------------------------------------------------------
def test_server_client_without_token_rejects_with_401(official: Run) -> None:
    scenario = completed(official, "errors")
    assert scenario.step("no-token")["rejected"] == "HTTP 401: Authorization header required"
    assert scenario.step("raw-no-token")["status"] == 401
    assert scenario.step("raw-no-token")["body"] == {"error": "Authorization header required"}


def test_server_client_with_wrong_token_rejects_with_403(official: Run) -> None:
    scenario = completed(official, "errors")
    assert scenario.step("wrong-token")["rejected"] == "HTTP 403: Invalid token"
    assert scenario.step("many-wrong-token")["rejected"] == "HTTP 403: Invalid token"
    assert scenario.step("raw-wrong-token")["status"] == 403
    assert scenario.step("raw-wrong-token")["body"] == {"error": "Invalid token"}


def test_server_client_push_the_server_rejects_is_400(official: Run) -> None:
    scenario = completed(official, "errors")
    assert scenario.step("bad-tokens")["rejected"] == "HTTP 400: Invalid request body"
    assert scenario.step("empty-topic")["rejected"] == "HTTP 400: Invalid request body"
    assert scenario.step("null-tokens")["rejected"] == "HTTP 400: Invalid request body"
    assert scenario.step("null-audience")["rejected"] == "HTTP 400: Invalid request body"
    assert scenario.step("misspelled-tokens")["rejected"] == "HTTP 400: Invalid request body"
    assert scenario.step("raw-not-json")["status"] == 400
    assert scenario.step("raw-not-json")["body"] == {"error": "Invalid JSON body"}
    for label in ("raw-no-channel", "raw-bad-tokens", "raw-surrogate-channel", "raw-surrogate-token"):
        step = scenario.step(label)
        assert step["status"] == 400
        assert step["body"]["error"] == "Invalid request body"
        assert isinstance(step["body"]["details"], str) and step["body"]["details"]


def test_server_client_sends_only_keys_the_strict_schema_allows() -> None:
    """createServerClient's push body, read from the installed package: every key it may send
    is allowed, so the strict push schema refuses nothing the official client writes."""
    source = (
        Path(__file__).parent / "js/node_modules/@impulselab/realtime/dist/server/createServerClient.js"
    ).read_text()
    bodies = re.findall(r"JSON\.stringify\(\{([^}]*)\}\)", source)
    assert bodies, "createServerClient no longer builds its body with JSON.stringify({...})"
    keys = {key.strip().split(":")[0].strip() for body in bodies for key in body.split(",") if key.strip()}
    assert keys == {"channel", "payload", "audience"}
    assert keys <= PUSH_KEYS


def test_rejected_pushes_reach_nobody_and_delivery_goes_on(official: Run) -> None:
    scenario = completed(official, "errors")
    assert scenario.step("valid")["rejected"] is None
    assert scenario.payloads("e") == [END]


# -- counts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("label", "sent"),
    [("nobody", 0), ("all", 3), ("topic", 1), ("token", 1), ("token-and-topic", 0), ("other-channel", 0)],
)
def test_push_answers_sent_with_the_number_of_connections_reached(official: Run, label: str, sent: int) -> None:
    step = completed(official, "counts").step(label)
    assert step["status"] == 200
    assert step["body"]["sent"] == sent


def test_push_many_resolves_and_delivers_each_event(official: Run) -> None:
    scenario = completed(official, "counts")
    assert scenario.step("pushMany")["rejected"] is None
    # pushMany sends its requests concurrently: their order is not defined.
    assert sorted(scenario.payloads("k1")[1:]) == [6, 7]
    assert scenario.payloads("k2")[:2] == [1, 2]
    assert scenario.payloads("k3")[:2] == [1, 3]


# -- resume ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_queue() -> Iterator[Service]:
    """A service that closes a stream whose queue holds more than two messages: a server-side
    close that a test can cause at will, with no admin API."""
    env = {"REALTIME_SECRET": SECRET, "IMPULSE_QUEUE_MAX_MESSAGES": "2", "IMPULSE_RETRY_MS": "50"}
    env["IMPULSE_DRAIN_WINDOW"] = "0.1"  # a quick teardown
    with LiveServer("wsgi:app", env=env, name="small-queue") as server:
        yield Service(server, server.url + "/", SECRET)


def test_client_resumes_by_itself_after_the_server_closes_its_stream(small_queue: Service) -> None:
    channel = f"resume-{uuid.uuid4().hex[:8]}"
    steps: list[Step] = [
        {"do": "subscribe", "client": "r", "as": "r", "channel": channel},
        {"do": "opened"},
        {"do": "push", "channel": channel, "payload": 1},
        {"do": "await", "counts": {"r": 1}},
        # One batch of three reaches the queue before the stream's writer runs: the third
        # overflows it, and the server ends the stream. EventSource reconnects with
        # Last-Event-ID, and the server replays 2, 3 and 4.
        {"do": "post", "label": "overflow", "body": [{"channel": channel, "payload": i} for i in (2, 3, 4)]},
        {"do": "await", "counts": {"r": 4}},
        {"do": "push", "channel": channel, "payload": END},
        {"do": "await", "counts": {"r": 5}},
        {"do": "eventSources", "label": "sources"},
    ]
    scenario = run_scenarios(small_queue.base, small_queue.server.health_url, SECRET, {"resume": steps})["resume"]
    assert scenario.stopped is None, scenario
    assert scenario.payloads("r") == [1, 2, 3, 4, END]
    [source] = scenario.step("sources")["eventSources"]
    assert source["opens"] == 2  # one EventSource, connected twice: the client resumed by itself
