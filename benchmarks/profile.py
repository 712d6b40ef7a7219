"""Where a flask-impulse worker spends its time: py-spy samples, summarised as text.

``python -m benchmarks --profile`` records every flask-impulse worker with py-spy
(``pip install py-spy``) while each case runs, in non-blocking mode so the worker is
never paused, and writes ``results/profiles/<case>.txt``: the functions that hold the
most samples, by own time and by inclusive time.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .servers import Server

_LOCATION = re.compile(r" \((?P<file>[^()]*?):(?P<line>\d+)\)$")


class Recorder:
    """py-spy attached to a broker's workers for the timed window of one case."""

    def __init__(self, output: Path, title: str) -> None:
        self.output = output
        self.title = title
        self.raw: list[Path] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def executable() -> str | None:
        """py-spy on PATH, or beside this Python (a virtualenv that is not activated)."""
        beside = Path(sys.executable).with_name("py-spy")
        return shutil.which("py-spy") or (str(beside) if beside.exists() else None)

    @classmethod
    def available(cls) -> bool:
        return cls.executable() is not None

    def start(self, server: Server) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        for pid in server.worker_pids():
            raw = self.output.with_name(f"{self.output.stem}-{pid}.raw")
            command = [str(self.executable()), "record", "--pid", str(pid), "--rate", "250", "--nonblocking"]
            command += ["--format", "raw", "--output", str(raw)]
            self._processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.raw.append(raw)
        time.sleep(0.5)  # py-spy needs a moment to attach

    def stop(self) -> None:
        """Stop recording (py-spy writes on SIGINT) and write the summary."""
        for process in self._processes:
            process.send_signal(signal.SIGINT)
        for process in self._processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._processes = []
        stacks: Counter[str] = Counter()
        for raw in self.raw:
            if raw.exists():
                stacks.update(read_raw(raw.read_text()))
                raw.unlink()
        self.raw = []
        self.output.write_text(summarise(stacks, self.title))


def read_raw(text: str) -> Counter[str]:
    """py-spy's raw format: one ``frame;frame;...;frame count`` line per distinct stack."""
    stacks: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def _short(frame: str) -> str:
    """``function (path/to/module.py:123)`` as ``function (module.py:123)``."""
    match = _LOCATION.search(frame)
    if not match:
        return frame
    name = frame[: match.start()]
    path = match["file"]
    for marker in ("site-packages/", "flask_impulse/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path}:{match['line']})"


def _function(frame: str) -> str:
    """A frame without its line number, so that all lines of a function add up."""
    short = _short(frame)
    return re.sub(r":\d+\)$", ")", short)


def summarise(stacks: Counter[str], title: str, top: int = 30) -> str:
    total = sum(stacks.values())
    if not total:
        return f"{title}\n(no samples)\n"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [_function(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    idle = sum(count for stack, count in stacks.items() if "run (gevent/hub.py" in stack.split(";")[-1])
    lines = [title, f"{total} samples at 250 Hz; samples in the hub's idle wait: {idle}", ""]
    lines.append("own time (the function itself, not what it calls):")
    lines += [f"  {100 * count / total:5.1f}%  {name}" for name, count in own.most_common(top)]
    lines.append("")
    lines.append("inclusive time (the function and what it calls):")
    lines += [f"  {100 * count / total:5.1f}%  {name}" for name, count in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
