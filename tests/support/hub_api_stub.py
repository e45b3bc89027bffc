"""A stand-in for the hub's REST API that a real jupyterhub-singleuser talks to when tested alone.

jupyterhub-singleuser asks the hub's API once before it listens (and exits when nothing answers), then
posts activity now and then: this answers both (200, `X-JupyterHub-Version`) on a free port of 127.0.0.1,
in a thread of the test process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jupyterhub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b'{"version": "%s"}' % jupyterhub.__version__.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-JupyterHub-Version", jupyterhub.__version__)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def hub_api_stub() -> Iterator[str]:
    """Serve the stand-in; yields its API URL (`http://127.0.0.1:<port>/hub/api`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="hub-api-stub", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
