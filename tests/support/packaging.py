"""A wheel of the checkout installed in a venv of its own, outside the checkout: the package as
pip installs it, for the packaging and plugin tests."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.support.server import ROOT

# Building the wheel (an isolated setuptools build) is the slow part, tens of seconds on a
# busy machine; each step is bounded.
STEP_TIMEOUT = 300


def outside_the_checkout() -> dict[str, str]:
    """This run's environment without ``PYTHONPATH``, which may name the checkout."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def run(*command: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=outside_the_checkout(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def install_the_wheel(base: Path) -> Path:
    """The python of a fresh venv under ``base`` holding this checkout's wheel (and no checkout).

    The wheel goes in without its dependencies, which the venv reads from this test run's own
    environment through a ``.pth`` line: installing Flask, gevent and gunicorn again would
    only test the package index. That line adds a directory, not its ``.pth`` files, so the
    editable install of the checkout there stays out of the venv.
    """
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        "-w",
        base / "dist",
        ROOT,
        cwd=base,
    )
    (wheel,) = (base / "dist").glob("flask_impulse-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", base / "venv", cwd=base)
    python = base / "venv" / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel, cwd=base)
    site_packages = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base).strip()
    (Path(site_packages) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python
