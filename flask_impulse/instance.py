"""The open streams of the whole instance, across its gunicorn workers, for ``/health``.

gunicorn hands each connection to one worker, so a worker knows only its own streams. The
master creates a directory for the instance (``on_starting``) and names it in the
environment its workers inherit; each worker keeps its count in a file there, named after its
pid and its broker's place among the process's brokers, rewritten in place (one ``pwrite``)
whenever a stream opens or ends. ``/health`` sums the files. A worker that exits stops
counting at once: the master deletes its files when it reaps it (``child_exit``), and a
reader skips the file of a pid that no longer runs (a worker killed but not yet reaped).

The operator console (``console.py``) adds a second file per worker beside the count,
``<pid>.<slot>.json``, rewritten once a second (written aside, then renamed into place): its
running totals and its channels' stream counts. It lives and dies with the count file.

Without that directory (an embedded app, the Flask dev server, tests) the count is the
process's own, which is then the whole instance.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: The environment variable naming the instance directory, set by the master for its workers.
ENVIRON = "FLASK_IMPULSE_INSTANCE_DIR"
#: Fixed width, so that a rewrite replaces the whole previous figure.
_WIDTH = 12

_slots = itertools.count()


def create_directory() -> Path:
    """The master, before it forks: a fresh directory for this instance's workers' counts."""
    directory = Path(tempfile.mkdtemp(prefix="flask-impulse-"))
    os.environ[ENVIRON] = str(directory)
    return directory


def remove_directory() -> None:
    """The master, on exit."""
    directory = os.environ.pop(ENVIRON, None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def forget_worker(pid: int) -> None:
    """The master reaped worker ``pid``: its streams are gone, so are its counts."""
    directory = os.environ.get(ENVIRON)
    if directory:
        for path in Path(directory).glob(f"{pid}.*"):
            path.unlink(missing_ok=True)


class StreamCount:
    """One broker's count of open streams, published for the instance's other workers."""

    def __init__(self) -> None:
        # Workers load the app the same way, so a process's n-th broker is the same app in each.
        self._slot = next(_slots)
        self._pid = 0
        self._fd: int | None = None

    def publish(self, count: int) -> None:
        fd = self._file()
        if fd is not None:
            os.pwrite(fd, b"%*d\n" % (_WIDTH, count), 0)

    def total(self, own: int) -> int:
        """The instance's streams, ``own`` being this process's (read live, not from its file)."""
        directory = os.environ.get(ENVIRON)
        if not directory:
            return own
        me = os.getpid()
        total = own
        for path in Path(directory).glob(f"*.{self._slot}"):
            pid = int(path.stem)
            if pid == me or not _running(pid):
                continue
            try:
                total += int(path.read_bytes() or b"0")
            except (OSError, ValueError):
                continue  # removed meanwhile (the worker exited), or being created
        return total

    def publish_figures(self, figures: dict[str, Any]) -> None:
        """Write this worker's console figures for the other workers (a no-op when embedded)."""
        directory = os.environ.get(ENVIRON)
        if not directory:
            return
        path = os.path.join(directory, f"{os.getpid()}.{self._slot}.json")
        try:
            with open(path + ".tmp", "w") as aside:
                json.dump(figures, aside)
            os.replace(path + ".tmp", path)
        except OSError:
            return  # the directory is gone: the instance is shutting down

    def other_figures(self) -> list[dict[str, Any]]:
        """The console figures the instance's other live workers last wrote."""
        directory = os.environ.get(ENVIRON)
        if not directory:
            return []
        me = os.getpid()
        found = []
        for path in Path(directory).glob(f"*.{self._slot}.json"):
            pid = int(path.name.split(".", 1)[0])
            if pid == me or not _running(pid):
                continue
            try:
                found.append(json.loads(path.read_bytes()))
            except (OSError, ValueError):
                continue  # removed meanwhile
        return found

    def _file(self) -> int | None:
        pid = os.getpid()
        if pid != self._pid:  # first use, or a fork (gunicorn's preload_app) since
            self._pid, self._fd = pid, None
            directory = os.environ.get(ENVIRON)
            if directory:
                path = os.path.join(directory, f"{pid}.{self._slot}")
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        return self._fd


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
