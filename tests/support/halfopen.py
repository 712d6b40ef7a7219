"""A half-open connection, made for real: run inside a fresh network namespace
(``unshare -n python -m tests.support.halfopen``), where the loopback interface is ours alone.

A gunicorn server with a 1 s heartbeat takes a stream; then the namespace's loopback goes
down, so that from the server's side the client vanishes without a FIN or an RST: its
heartbeats are never acknowledged, exactly as when a client's network is cut. The server's
access log line for the stream appears when the server ends it. Prints one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import requests

from tests.support.server import LiveServer
from tests.support.streams import SSEStream

HEARTBEAT = 1.0
GIVE_UP_AFTER = 15.0


def main() -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = {"REALTIME_SECRET": "secret-of-the-half-open-test-0123456789", "IMPULSE_HEARTBEAT_INTERVAL": str(HEARTBEAT)}
    with LiveServer("wsgi:app", env=env, name="halfopen", access_log=True) as server:
        stream = SSEStream(server.url + "/", {"channel": "half-open"})
        stream.assert_silent(HEARTBEAT * 1.5)  # heartbeats flow
        before = requests.get(server.health_url, timeout=5).json()["connections"]
        cut = time.monotonic()
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        noticed_after = None
        while time.monotonic() - cut < GIVE_UP_AFTER:
            if "channel=half-open" in server.log():
                noticed_after = round(time.monotonic() - cut, 2)
                break
            time.sleep(0.05)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        after = requests.get(server.health_url, timeout=5).json()["connections"]
        stream.close()
    print(json.dumps({"before": before, "after": after, "noticed_after_s": noticed_after, "heartbeat_s": HEARTBEAT}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
