"""A webhook receiver on 127.0.0.1 for tests: a real HTTP server (http.server in a thread) that records every
POST and answers a chosen status; it can be taken down and brought back on the same port."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fleethub.shared.net import free_port


@dataclass(frozen=True)
class Received:
    """One POST as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up mid-answer (a webhook's timeout) is what some tests do on purpose


class Receiver:
    """Records POSTs to `http://127.0.0.1:<port>/…`, answering `status`; `stop()`/`start()` take it down
    and bring it back on the same port."""

    def __init__(self, status: int = 204, delay: float = 0.0) -> None:
        self.port = free_port()
        self.status = status
        self.delay = delay  # seconds the answer's body takes, dripped in ten bytes
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The receiver's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[Received]:
        """The POSTs received so far."""
        with self._lock:
            return list(self.received)

    def start(self) -> None:
        """Listen (again) on the port."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "10")
                self.end_headers()
                for _ in range(10):  # the body dripped over `delay` seconds, a byte at a time
                    self.wfile.flush()
                    time.sleep(receiver.delay / 10)
                    self.wfile.write(b"k")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
