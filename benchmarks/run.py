"""``python -m benchmarks [--quick] [--only idle,fanout,...]``: every scenario against the
Node reference and flask-impulse in one run, then the table, the JSON file and the plot."""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import shlex
import statistics
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

from . import report, scenarios, servers
from .profile import Recorder
from .scenarios import SECRET, Outcome

SCENARIOS = ("idle", "fanout", "latency", "push", "storm", "cluster")
#: Run only when named in --only: no target reads them.
OPTIONAL = ("drain",)

#: (case name, scenario, keyword arguments) for the full run and for --quick.
FULL: dict[str, list[tuple[str, Callable[..., Outcome], dict[str, Any]]]] = {
    "idle": [
        ("idle 1000", scenarios.idle, {"streams": 1000}),
        ("idle 10000", scenarios.idle, {"streams": 10_000}),
        # Close to the per-process limit of 20,000 descriptors, in the generator and in the broker.
        ("idle 18000", scenarios.idle, {"streams": 18_000}),
    ],
    "fanout": [
        ("fanout 1000x200", scenarios.fanout, {"subscribers": 1000, "pushes": 200}),
        ("fanout 100x2000", scenarios.fanout, {"subscribers": 100, "pushes": 2000}),
    ],
    "latency": [("latency", scenarios.latency, {"subscribers": 1000, "pushes": 200, "rate": 20.0})],
    "push": [
        ("push 0 subs", scenarios.push, {"subscribers": 0, "pushes": 5000, "warmup": 500}),
        ("push 100 subs", scenarios.push, {"subscribers": 100, "pushes": 2000, "warmup": 200}),
        ("push batch of 100", scenarios.push, {"subscribers": 0, "pushes": 100, "batch": 100, "warmup": 10}),
    ],
    # 10,000 streams on 10 channels, 20 pushes per second round robin: 20,000 deliveries per
    # second of live traffic through the storm, and a message every 0.5 s on each channel.
    "storm": [("reconnect storm", scenarios.storm, {"streams": 10_000, "channels": 10, "rate": 20.0})],
    "cluster": [("cluster", scenarios.fanout, {"subscribers": 1000, "pushes": 200})],
    # The storm started by the broker: flask-impulse with Redis, one worker, SIGHUP.
    "drain": [("reconnect storm, drain", scenarios.storm, {"streams": 10_000, "channels": 10, "drain": True})],
}
#: Capacity readings that no target reads: run once even under --repeat, which keeps a
#: ``--repeat 3`` run within about 15 minutes on 2 cores.
ONCE = {"idle 1000", "idle 18000"}
QUICK: dict[str, list[tuple[str, Callable[..., Outcome], dict[str, Any]]]] = {
    # Named as the full run's case its targets read, at quick sizes (as every quick case is).
    "idle": [("idle 10000", scenarios.idle, {"streams": 1000})],
    "fanout": [
        ("fanout 1000x200", scenarios.fanout, {"subscribers": 300, "pushes": 50}),
        ("fanout 100x2000", scenarios.fanout, {"subscribers": 50, "pushes": 400}),
    ],
    "latency": [("latency", scenarios.latency, {"subscribers": 200, "pushes": 40, "rate": 20.0})],
    "push": [
        ("push 0 subs", scenarios.push, {"subscribers": 0, "pushes": 1000, "warmup": 200}),
        ("push 100 subs", scenarios.push, {"subscribers": 100, "pushes": 300, "warmup": 50}),
        ("push batch of 100", scenarios.push, {"subscribers": 0, "pushes": 20, "batch": 100, "warmup": 5}),
    ],
    "storm": [("reconnect storm", scenarios.storm, {"streams": 1000, "channels": 10, "rate": 20.0})],
    "cluster": [("cluster", scenarios.fanout, {"subscribers": 300, "pushes": 50})],
    "drain": [("reconnect storm, drain", scenarios.storm, {"streams": 1000, "channels": 10, "drain": True})],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for development (writes quick.*)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS + OPTIONAL}")
    parser.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each case this many times, brokers alternating, and report the median of each figure",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record flask-impulse workers with py-spy in each timed window (results/profiles/)",
    )
    parser.add_argument(
        "--impulse-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for flask-impulse (e.g. IMPULSE_METRICS_PATH=/metrics); repeatable",
    )
    parser.add_argument(
        "--brokers", default="reference,flask-impulse", help="comma-separated subset of reference,flask-impulse"
    )
    return parser.parse_args(argv)


def run_case(name: str, broker: str, scenario: Callable[..., Outcome], factory: Any, kwargs: dict[str, Any]) -> Any:
    print(f"-- {name}: {broker} ...", flush=True)
    if broker == report.REFERENCE and kwargs.get("batch", 1) > 1:
        outcome = Outcome(skipped="skipped: the reference has no batch endpoint")
        print(f"   {outcome.skipped}", flush=True)
        return outcome.as_dict()
    if PROFILE and broker != report.REFERENCE:
        factory = profiled(factory, name, broker)
    try:
        outcome = scenario(factory, **kwargs)
    except Exception as exc:  # a broker that refuses or dies fails its case, not the run
        outcome = Outcome(errors=[f"{type(exc).__name__}: {exc}"])
        traceback.print_exc()
    status = "ok" if outcome.ok else (outcome.skipped or "FAILED: " + "; ".join(outcome.errors[:3]))
    print(f"   {status} {outcome.metrics}", flush=True)
    scenarios.wait_quiet()
    return outcome.as_dict()


PROFILE = False


def profiled(factory: Callable[[], servers.Server], case: str, broker: str) -> Callable[[], servers.Server]:
    """``factory``, with py-spy recording the broker's workers over the timed window."""

    def start() -> servers.Server:
        server = factory()
        stem = re.sub(r"[^a-z0-9]+", "-", f"{case} {broker}".lower()).strip("-")
        output = servers.BENCH_DIR / "results" / "profiles" / f"{stem}.txt"
        server.recorder = Recorder(output, f"py-spy profile: {case}, {broker} (timed window only)")
        return server

    return start


def main(argv: list[str] | None = None) -> int:
    global PROFILE
    args = parse_args(argv)
    if args.profile and not Recorder.available():
        print("--profile needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    PROFILE = args.profile
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SCENARIOS + OPTIONAL)
    if unknown:
        print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    brokers = [name.strip() for name in args.brokers.split(",") if name.strip()]
    cases = {name.strip() for name in args.cases.split(",") if name.strip()}
    plan = QUICK if args.quick else FULL
    extra_env = dict(item.split("=", 1) for item in args.impulse_env)
    servers.ensure_reference_installed()
    open_files = servers.raise_open_file_limit()
    factories = {
        report.REFERENCE: lambda: servers.reference(SECRET),
        report.IMPULSE: lambda: servers.impulse(SECRET, env=extra_env),
    }
    # Before the first case, so that the load average is the one the run started under.
    run_meta = meta(args, sys.argv[1:] if argv is None else argv, open_files)
    results: dict[str, dict[str, Any]] = {}
    for scenario_name in chosen:
        for case, scenario, kwargs in plan[scenario_name]:
            if cases and case not in cases:
                continue
            rounds = []
            for _ in range(1 if case in ONCE else args.repeat):  # the brokers alternate, so that noise falls on both
                if scenario_name in ("cluster", "drain"):
                    rounds.append(run_with_redis(case, scenario, kwargs, brokers, factories, extra_env))
                else:
                    rounds.append({b: run_case(case, b, scenario, factories[b], kwargs) for b in brokers})
            results[case] = {broker: median_of([r[broker] for r in rounds]) for broker in rounds[0]}
    targets = report.evaluate(results)
    document: dict[str, Any] = {
        "meta": run_meta,
        "results": results,
        "targets": targets,
    }
    # Only a whole run is "latest"; a run of some cases or brokers, or with extra settings, is a partial one.
    whole = not (args.cases or args.impulse_env or not set(SCENARIOS) <= set(chosen) or len(brokers) < 2)
    stem = "quick" if args.quick else "latest" if whole else "partial"
    out = servers.BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    report.write_json(out / f"{stem}.json", document)
    title = f"flask-impulse vs @impulselab/realtime-service 0.1.1, {document['meta']['date']}"
    if args.repeat > 1:
        title += f", median of {args.repeat} runs"
    if args.quick:
        title += " (--quick sizes)"
    report.plot(out / f"{stem}.png", targets, title)
    (out / f"{stem}.md").write_text(report.markdown(results, targets, document["meta"]))
    print(report.table(results, targets))
    print(f"\nwritten: {out / stem}.json, .png and .md")
    failed = [case for case, brokers_ in results.items() for o in brokers_.values() if o["errors"]]
    return 1 if failed else 0


def median_of(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """One outcome from several runs: the median of each figure; a failure in any run fails it."""
    if len(outcomes) == 1:
        return outcomes[0]
    figures: dict[str, Any] = {}
    for name in outcomes[0]["metrics"]:
        values = [o["metrics"][name] for o in outcomes if isinstance(o["metrics"].get(name), (int, float))]
        figures[name] = statistics.median(values) if values else outcomes[0]["metrics"][name]
    return {
        "ok": all(o["ok"] for o in outcomes),
        "skipped": outcomes[0]["skipped"],
        "errors": [error for o in outcomes for error in o["errors"]],
        "metrics": figures,
        "runs": [o["metrics"] for o in outcomes],
    }


def run_with_redis(
    case: str,
    scenario: Callable[..., Outcome],
    kwargs: dict[str, Any],
    brokers: list[str],
    factories: dict[str, Any],
    env: dict[str, str],
) -> dict[str, Any]:
    """A case against flask-impulse with Redis: two workers (the cluster, against the one
    reference process), or one to drain (which the reference has no counterpart for)."""
    drain = kwargs.get("drain", False)
    outcomes: dict[str, Any] = {}
    if report.REFERENCE in brokers and drain:
        outcomes[report.REFERENCE] = Outcome(skipped="skipped: the reference has no drain").as_dict()
    elif report.REFERENCE in brokers:
        outcomes[report.REFERENCE] = run_case(case, report.REFERENCE, scenario, factories[report.REFERENCE], kwargs)
    if report.IMPULSE in brokers:
        name = "flask-impulse + Redis" if drain else report.CLUSTER
        factory, cleanup, skipped = scenarios.cluster_factory(env, workers=1 if drain else 2)
        try:
            if factory is None:
                print(f"-- {case}: {name}: {skipped}", flush=True)
                outcomes[name] = Outcome(skipped=skipped).as_dict()
            else:
                outcomes[name] = run_case(case, name, scenario, factory, kwargs)
        finally:
            cleanup()
    return outcomes


def meta(args: argparse.Namespace, words: list[str], open_files: int) -> dict[str, Any]:
    """Where and how the run was made; ``words`` are its command-line arguments."""

    def output(*program: str) -> str:
        try:
            return subprocess.run(program, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    with open("/proc/loadavg") as file:
        load = file.read().split()[:3]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", "benchmarks", *words]),
        "repeat": args.repeat,
        "quick": args.quick,
        "commit": output("git", "-C", str(servers.ROOT), "rev-parse", "--short", "HEAD"),
        "python": platform.python_version(),
        "node": output("node", "--version"),
        "cpus": output("nproc"),
        "cpu_model": _cpu_model(),
        "load_average_at_start": load,
        "open_files_limit": open_files,
        "impulse_env": args.impulse_env,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
