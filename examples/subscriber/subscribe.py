"""Subscribe from a Python script: print each message of some channels as one JSON line.

    python examples/subscriber/subscribe.py --url http://127.0.0.1:8080/ --channel chat:message

Messages go to standard output, one JSON object a line (pipe it: ``| jq .payload``);
connection states and errors go to standard error. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from typing import Any

from flask_impulse import Event, RealtimeClient, RealtimeClientError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the messages of flask-impulse channels.")
    parser.add_argument("--url", default=os.environ.get("REALTIME_URL", "http://127.0.0.1:8080/"), help="BASE URL")
    parser.add_argument("--channel", action="append", required=True, help="a channel; repeat for several")
    parser.add_argument("--token", help="subscriber token, for pushes addressed to tokens")
    parser.add_argument("--topic", help="only messages pushed to this topic (a room)")
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--debug", action="store_true", help="log what the client does")
    args = parser.parse_args(argv)

    done = threading.Event()
    received = 0
    failure: list[RealtimeClientError] = []

    def show(event: Event[Any]) -> None:
        nonlocal received
        print(json.dumps({"channel": event.channel, "id": event.id, "payload": event.payload}), flush=True)
        received += 1
        if args.count is not None and received >= args.count:
            done.set()

    def on_error(error: Exception) -> None:
        print(f"[error] {error}", file=sys.stderr, flush=True)
        if isinstance(error, RealtimeClientError) and error.final:
            failure.append(error)
            done.set()

    with RealtimeClient(args.url, debug=args.debug) as client:
        client.on_connection_state(lambda state: print(f"[{state}]", file=sys.stderr, flush=True))
        client.on_error(on_error)
        # Every channel of one token and topic shares one stream: ?channel=a&channel=b.
        for channel in args.channel:
            client.subscribe(channel, show, token=args.token, topic=args.topic)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
