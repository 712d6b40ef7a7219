"""The official client in Node (tests/js/resume.mjs), run in the background while a test
pushes, restarts or drains the server; what it prints is read line by line."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.server import LOG_DIR

JS_DIR = Path(__file__).resolve().parents[1] / "js"


class ResumingClient:
    """``createRealtimeClient`` subscribed to ``channel`` until ``count`` messages arrived."""

    def __init__(self, base: str, channel: str, count: int, timeout: float = 60) -> None:
        node = shutil.which("node")
        if node is None or not (JS_DIR / "node_modules" / "@impulselab" / "realtime").is_dir():
            pytest.fail("Node 20 and the npm packages are needed: install node, then run `npm ci` in tests/js")
        LOG_DIR.mkdir(exist_ok=True)
        self.stderr_path = LOG_DIR / f"resume-node-{channel}.log"
        self._stderr: IO[str] = open(self.stderr_path, "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [node, "resume.mjs", base, channel, str(count), str(int(timeout * 1000))],
            cwd=JS_DIR,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.received: list[Any] = []
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))

    def next_line(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        """The next line holding ``kind`` (``open``, ``payload``, ``done``); payloads on the way are kept."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"the official client printed no {kind!r}; see {self.stderr_path}") from None
            if "payload" in line:
                self.received.append(line["payload"])
            if kind in line:
                return line

    def wait_received(self, count: int, timeout: float = 30) -> None:
        while len(self.received) < count:
            self.next_line("payload", timeout)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> ResumingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
