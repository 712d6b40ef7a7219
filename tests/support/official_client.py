"""Running the official npm client (``@impulselab/realtime`` in Node 20) from the Python tests.

``tests/js/scenario.mjs`` plays JSON scenarios with ``createRealtimeClient`` and
``createServerClient``; this module feeds it, bounds its run time, and wraps what it prints.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).resolve().parents[1] / "js"
Step = dict[str, Any]


@dataclass
class ScenarioResult:
    """What one scenario did: its steps' results and the events each handler got."""

    name: str
    steps: list[dict[str, Any]]
    received: dict[str, list[dict[str, Any]]]
    stopped: str | None
    released: bool | None

    def step(self, label: str) -> dict[str, Any]:
        """The result of the step labelled ``label``; fails the test if it never ran."""
        for result in self.steps:
            if result.get("label") == label:
                return result
        raise AssertionError(f"scenario {self.name!r} did not reach step {label!r} (stopped: {self.stopped})")

    def payloads(self, handler: str) -> list[Any]:
        """The payloads ``handler`` received, in order; a missing payload reads as ``"<none>"``."""
        return [event.get("payload", "<none>") for event in self.received[handler]]


def run_scenarios(
    base: str, health_url: str, secret: str, scenarios: dict[str, list[Step]], timeout: float = 90
) -> dict[str, ScenarioResult]:
    """Play ``scenarios`` with the official client against ``base``, in one Node process."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@impulselab" / "realtime").is_dir():
        pytest.fail("Node 20 and the npm packages are needed: install node, then run `npm ci` in tests/js")
    config = {
        "serviceUrl": base,
        "healthUrl": health_url,
        "secret": secret,
        # Node's own deadline comes first, so that a stuck run still reports how far it got.
        "timeoutMs": int((timeout - 5) * 1000),
        "waitMs": 3000,
        "scenarios": scenarios,
    }
    process = subprocess.run(
        [node, "scenario.mjs"], cwd=JS_DIR, input=json.dumps(config), capture_output=True, text=True, timeout=timeout
    )
    assert process.returncode == 0, f"node exited with {process.returncode}:\n{process.stdout}\n{process.stderr}"
    output = json.loads(process.stdout)
    assert not output["timedOut"], output
    return {name: ScenarioResult(name=name, **result) for name, result in output["scenarios"].items()}
