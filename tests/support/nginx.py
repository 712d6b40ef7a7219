"""A real nginx (the Debian package) in front of test services, configured from deploy/nginx.conf.

The test config is deploy/nginx.conf itself with only what a test must change: the upstream's
addresses, the listen address, two workers, and where logs, the pid file and temp files go.
Every SSE setting (balancing, buffering, timeouts, HTTP/1.1, retries) is the deployed one.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .server import LOG_DIR, ROOT, free_port

DEPLOYED_CONFIG = ROOT / "deploy" / "nginx.conf"


def config_for(upstreams: list[str], port: int, prefix: Path) -> str:
    """deploy/nginx.conf, rewritten to proxy ``upstreams`` (host:port) from 127.0.0.1:``port``."""
    text = DEPLOYED_CONFIG.read_text()
    deployed = re.search(r"^\s*server \S+:\d+(?P<parameters>[^;]*);", text, re.MULTILINE)
    assert deployed is not None, "deploy/nginx.conf: no upstream server line"
    parameters = deployed["parameters"]  # max_fails, fail_timeout...: the deployed ones
    servers = "".join(f"        server {upstream}{parameters};\n" for upstream in upstreams)
    text, found = re.subn(r"(?:^ *server \S+:\d+[^;]*;\n)+", lambda _: servers, text, flags=re.MULTILINE)
    assert found == 1, "deploy/nginx.conf: upstream realtime_backend with server lines not found"
    text, found = re.subn(r"listen 80;", f"listen 127.0.0.1:{port};", text)
    assert found == 1, "deploy/nginx.conf: 'listen 80;' not found"
    # Two workers, as on any multi-core host: balancing must hold across nginx's workers.
    text = text.replace("worker_processes auto;", "worker_processes 2;")
    text = text.replace("access_log /dev/stdout;", f"access_log {prefix}/access.log;")
    text = text.replace("error_log /dev/stderr warn;", f"error_log {prefix}/error.log warn;")
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return text.replace("http {\n", "http {\n" + temp_paths, 1)


class Nginx:
    def __init__(self, upstreams: list[str], directory: Path) -> None:
        if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            raise RuntimeError("nginx is not installed (apt-get install nginx; .ci/run does it)")
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = directory
        self.config = config_for(upstreams, self.port, directory)
        self.process: subprocess.Popen[bytes] | None = None
        LOG_DIR.mkdir(exist_ok=True)

    def start(self, timeout: float = 10) -> Nginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        config_path = self.prefix / "nginx.conf"
        config_path.write_text(self.config)
        globals_ = f"daemon off; pid {self.prefix}/nginx.pid;"
        if os.geteuid() == 0:
            globals_ += " user root;"  # temp dirs under the test's tmp dir, which only root may enter
        command = [self.binary, "-p", str(self.prefix), "-e", str(self.prefix / "error.log")]
        command += ["-c", str(config_path), "-g", globals_]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.process.returncode}):\n{self.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen within {timeout}s:\n{self.error_log()}")

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()  # fast shutdown: open streams are cut
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        if (self.prefix / "error.log").exists():
            shutil.copy(self.prefix / "error.log", LOG_DIR / f"nginx-{self.port}-error.log")

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
