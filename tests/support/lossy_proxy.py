"""An HTTP proxy on loopback that loses answers on purpose: the push reached the service, but
the publisher cannot know it. What a publisher's retry must survive without duplicating."""

from __future__ import annotations

import http.server
import select
import threading
from collections import deque

import requests

#: What the proxy does with the next request, one per request; then it only forwards.
#: forward-then-drop: the service handles it, the publisher's connection is closed unanswered.
#: forward-then-503: the service handles it, the publisher is told 503 (a lying "retry later").
#: forward-then-hang: the service handles it, the answer is held until the publisher gives up.
#: refuse-503: the service never sees it, the publisher is told 503 (an honest "retry later").
ACTIONS = ("forward-then-drop", "forward-then-503", "forward-then-hang", "refuse-503")
#: Headers of a push that reach the service: the rest (Host, Content-Length) requests sets itself.
_FORWARDED = ("Authorization", "Content-Type", "Idempotency-Key")


class LossyProxy:
    """Forwards ``POST``s to ``target`` (a base URL), acting out ``script`` on the first ones.

    ``forwarded`` counts requests that reached the service, ``received`` every request.
    """

    def __init__(self, target: str, script: list[str], *, retry_after: str = "1") -> None:
        unknown = set(script) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown actions {unknown}")
        self.target = target.rstrip("/")
        self.retry_after = retry_after
        self.received = 0
        self.forwarded = 0
        self._script = deque(script)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> LossyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _next_action(self) -> str | None:
        with self._lock:
            self.received += 1
            return self._script.popleft() if self._script else None

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> requests.Response:
        response = requests.post(self.target + path, data=body, headers=headers, timeout=30)
        with self._lock:
            self.forwarded += 1
        return response

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as ServerClient's session uses it

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name: self.headers[name] for name in _FORWARDED if name in self.headers}
                action = proxy._next_action()
                if action == "refuse-503":
                    self._reply(503, b'{"error":"Service unavailable"}', {"Retry-After": proxy.retry_after})
                    return
                path = self.path if self.path != "/" else ""
                response = proxy._forward(path, headers, body)
                if action == "forward-then-drop":
                    self.close_connection = True
                elif action == "forward-then-503":
                    self._reply(503, b'{"error":"Service unavailable"}', {"Retry-After": proxy.retry_after})
                elif action == "forward-then-hang":
                    # Until the publisher hangs up (its read timed out), or the proxy stops.
                    while not proxy._stop.is_set():
                        readable, _, _ = select.select([self.connection], [], [], 0.05)
                        if readable and not self.connection.recv(1):
                            break
                    self.close_connection = True
                else:
                    self._reply(response.status_code, response.content, {})

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler
