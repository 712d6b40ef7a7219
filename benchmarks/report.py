"""Figures out: the targets of issue 13 as ratios flask-impulse / reference, a table on
stdout, the JSON file, and the plot."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REFERENCE = "reference"
IMPULSE = "flask-impulse"
CLUSTER = "flask-impulse 2 workers + Redis"


@dataclass(frozen=True)
class Target:
    """A ratio flask-impulse / reference and the bound the issue sets for it; or, with
    ``absolute``, a bound on flask-impulse's own figure (the reference's shown beside it)."""

    label: str
    case: str
    metric: str
    bound: float
    at_most: bool = True  # False: the ratio must be at least the bound
    reference_case: str | None = None  # when the reference is measured in another case
    reference_metric: str | None = None
    impulse_broker: str = IMPULSE
    absolute: bool = False


TARGETS = [
    Target("CPU µs per HTTP push (0 subscribers, 8 publishers)", "push 0 subs", "cpu_us_per_request", 1.5),
    Target("pushes per second (same run)", "push 0 subs", "requests_per_s", 0.7, at_most=False),
    Target("push round trip p99, ms (same run)", "push 0 subs", "round_trip_p99_ms", 2.0),
    Target("CPU µs per stream opened, 10,000 streams", "idle 10000", "cpu_us_per_stream_opened", 1.5),
    Target("streams opened per second, 10,000 streams", "idle 10000", "connect_per_s", 0.7, at_most=False),
    Target("RSS KiB per idle stream at 10,000", "idle 10000", "rss_per_stream_kib", 1.0),
    # 1 / 0.7: the storm is the opening target seen from the clients' side, with the resume on top.
    Target("reconnect storm: s until all 10,000 back and receiving", "reconnect storm", "all_receiving_s", 1.4),
    Target("reconnect storm: messages missed (count, not ratio)", "reconnect storm", "missed_total", 0, absolute=True),
    Target("CPU µs per delivery, fan-out 1,000 x 200", "fanout 1000x200", "cpu_us_per_delivery", 0.2),
    Target("CPU µs per delivery, fan-out 100 x 2,000", "fanout 100x2000", "cpu_us_per_delivery", 0.7),
    Target("CPU µs per delivery, paced (latency)", "latency", "cpu_us_per_delivery", 0.8),
    Target("p99 push→receive, ms, 1,000 subscribers", "latency", "p99_ms", 1.0),
    Target(
        "CPU µs per message, batch of 100 vs push",
        "push batch of 100",
        "cpu_us_per_message",
        1.0,
        reference_case="push 0 subs",
        reference_metric="cpu_us_per_request",
    ),
    Target(
        "deliveries/s, 2 workers + Redis vs reference",
        "cluster",
        "deliveries_per_s",
        1.5,
        at_most=False,
        impulse_broker=CLUSTER,
    ),
]


def evaluate(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each target's ratio, or why there is none (a scenario failed or was skipped)."""
    rows = []
    for target in TARGETS:
        row: dict[str, Any] = {
            "label": target.label,
            "bound": target.bound,
            "at_most": target.at_most,
            "absolute": target.absolute,
        }
        ours = results.get(target.case, {}).get(target.impulse_broker)
        theirs = results.get(target.reference_case or target.case, {}).get(REFERENCE)
        reasons = [
            f"{name}: {outcome.get('skipped') or 'failed'}"
            for name, outcome in ((target.impulse_broker, ours), (REFERENCE, theirs))
            if outcome is not None and not outcome["ok"]
        ]
        if ours is None or theirs is None:
            reasons.append("not run")
        if reasons or ours is None or theirs is None:
            row.update(ratio=None, met=False, note="; ".join(reasons))
            rows.append(row)
            continue
        mine = ours["metrics"][target.metric]
        other = theirs["metrics"][target.reference_metric or target.metric]
        row.update(impulse=mine, reference=other)
        if target.absolute:
            row.update(ratio=None, met=mine <= target.bound if target.at_most else mine >= target.bound)
        else:
            ratio = mine / other if other else math.inf
            row.update(ratio=round(ratio, 3), met=ratio <= target.bound if target.at_most else ratio >= target.bound)
        rows.append(row)
    return rows


def _bound(row: dict[str, Any]) -> str:
    return f"{'≤' if row['at_most'] else '≥'} {_cell(row['bound'])}"


def table(results: dict[str, dict[str, dict[str, Any]]], targets: list[dict[str, Any]]) -> str:
    lines = []
    for case, brokers in results.items():
        lines.append(f"\n== {case}")
        metrics: list[str] = []
        for outcome in brokers.values():
            metrics += [name for name in outcome["metrics"] if name not in metrics]
        names = list(brokers)
        lines.append(f"  {'':28}" + "".join(f"{name:>32}" for name in names))
        for metric in metrics:
            cells = "".join(f"{_cell(brokers[name]['metrics'].get(metric)):>32}" for name in names)
            lines.append(f"  {metric:28}{cells}")
        for name, outcome in brokers.items():
            if outcome["skipped"]:
                lines.append(f"  {name}: {outcome['skipped']}")
            for error in outcome["errors"]:
                lines.append(f"  FAILED {name}: {error}")
    lines.append("\n== targets (flask-impulse / reference)")
    for row in targets:
        bound = _bound(row)
        if "note" in row:
            lines.append(f"  {row['label']:56} {'—':>8}  target {bound:6}  {row['note']}")
            continue
        verdict = "met" if row["met"] else "NOT met"
        detail = f"({_cell(row['impulse'])} vs {_cell(row['reference'])})"
        ratio = "count" if row["absolute"] else f"{row['ratio']:.3f}"
        lines.append(f"  {row['label']:56} {ratio:>8}  target {bound:6}  {verdict:8}{detail}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def plot(path: Path, targets: list[dict[str, Any]], title: str) -> None:
    """One bar per target: the ratio on a log scale, the bound as a tick, green when met."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    rows = list(reversed(targets))
    figure, axes = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.6))
    for index, row in enumerate(rows):
        if "note" in row:
            axes.text(0.055, index, row["note"], va="center", fontsize=8, color="grey")
            continue
        if row["absolute"]:  # a count, not a ratio: said in words where the bar would be
            text = f"{_cell(row['impulse'])} (bound {_bound(row)}; reference {_cell(row['reference'])})"
            axes.text(0.055, index, text, va="center", fontsize=8, color="#3a9d5d" if row["met"] else "#c8553d")
            continue
        axes.barh(index, row["ratio"], color="#3a9d5d" if row["met"] else "#c8553d", height=0.6)
        axes.text(row["ratio"] * 1.03, index - 0.3, f"{row['ratio']:.2f}", va="bottom", fontsize=8)
        axes.plot([row["bound"]] * 2, [index - 0.4, index + 0.4], color="black", linewidth=2)
    axes.set_xscale("log")
    axes.set_xlim(0.05, 50)  # a push round trip's tail has been 30x the reference's
    axes.xaxis.set_major_locator(FixedLocator([0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    axes.set_yticks(range(len(rows)), [row["label"] for row in rows], fontsize=8)
    axes.set_xlabel("flask-impulse / reference (log scale); black tick: target; green: met, red: not met")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(results: dict[str, dict[str, dict[str, Any]]], targets: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The figures as Markdown tables, for benchmarks/README.md."""
    lines = [
        f"`{meta['command']}` on {meta['date']}, commit {meta['commit']}, {meta['cpus']} CPUs "
        f"({meta['cpu_model']}), Python {meta['python']}, Node {meta['node']}; "
        f"load average at start {' '.join(meta['load_average_at_start'])}.",
        "",
        "| target | flask-impulse | reference | ratio | bound | |",
        "| --- | ---: | ---: | ---: | :---: | --- |",
    ]
    for row in targets:
        bound = _bound(row)
        if "note" in row:
            lines.append(f"| {row['label']} | — | — | — | {bound} | {row['note']} |")
            continue
        verdict = "met" if row["met"] else "**not met**"
        ratio = "(count)" if row["absolute"] else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['label']} | {_cell(row['impulse'])} | {_cell(row['reference'])} | {ratio} | {bound} | {verdict} |"
        )
    for case, brokers in results.items():
        names = list(brokers)
        metrics: list[str] = []
        for outcome in brokers.values():
            metrics += [name for name in outcome["metrics"] if name not in metrics]
        lines += ["", f"**{case}**", "", "| | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for metric in metrics:
            cells = " | ".join(_cell(brokers[name]["metrics"].get(metric)) for name in names)
            lines.append(f"| {metric} | {cells} |")
        for name, outcome in brokers.items():
            if outcome["skipped"]:
                lines.append(f"| {name} | {outcome['skipped']} |" + " |" * (len(names) - 1))
            for error in outcome["errors"]:
                lines.append(f"| FAILED {name} | {error} |" + " |" * (len(names) - 1))
    return "\n".join(lines) + "\n"
