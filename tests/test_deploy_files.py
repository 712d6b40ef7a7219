"""deploy/, checked offline since there is no container engine here: the Kubernetes manifests
against the API schemas, the Dockerfile with hadolint, and the image's install steps replayed
in a fresh venv from exactly the files the Dockerfile copies."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.server import ROOT
from tests.test_packaging import run

pytestmark = pytest.mark.tool

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is missing: pip install -e '.[test]'"
    return path


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


@pytest.mark.parametrize("manifest", sorted((DEPLOY / "kubernetes").glob("*.yaml")), ids=lambda path: path.name)
def test_kubernetes_manifests_match_the_api_schemas(manifest: Path) -> None:
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(manifest)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_healthcheck_is_valid_python() -> None:
    (healthcheck,) = [rest for keyword, rest in instructions() if keyword == "HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"]
    compile(command[2], "HEALTHCHECK", "exec")


def test_the_image_install_steps_work_from_the_copied_files_alone(tmp_path: Path) -> None:
    """COPY the files the Dockerfile names into an empty directory, then replay its
    ``pip install`` (as a wheel build and a no-deps install, dependencies read from this run's
    environment, as tests/test_packaging.py does) and its ``CMD``."""
    app = tmp_path / "app"
    app.mkdir()
    for keyword, rest in instructions():
        if keyword == "COPY":
            *sources, target = shlex.split(rest)
            for source in sources:
                destination = app / target / (Path(source).name if target.endswith("/") else "")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, destination)
    (install,) = [rest for keyword, rest in instructions() if keyword == "RUN" and "pip install" in rest]
    assert '".[redis]"' in install
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", app, cwd=app)
    (wheel,) = (tmp_path / "dist").glob("flask_impulse-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv", cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel, cwd=tmp_path)
    site_packages = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    (Path(site_packages.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (cmd,) = [json.loads(rest) for keyword, rest in instructions() if keyword == "CMD"]
    program = tmp_path / "venv" / "bin" / cmd[0]
    assert program.exists(), f"the image's CMD {cmd} is not installed"
    version = run(python, program, "--version", cwd=tmp_path)
    assert version.startswith("flask-impulse ")
    run(python, "-c", "import flask_impulse.broker.redis, flask_impulse.static, redis", cwd=tmp_path)
