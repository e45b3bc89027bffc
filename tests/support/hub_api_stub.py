"""A stand-in for the hub's REST API that a real jupyterhub-singleuser talks to when tested alone.

jupyterhub-singleuser asks the hub's API once before it listens (and exits when nothing answers), then
posts activity now and then: this answers both (200, `X-JupyterHub-Version`) on a free port of 127.0.0.1,
in a thread of the test process. With `hub_api_with_tokens`, it also answers the server's check of a
token (`GET …/user`) for the tokens a test registers, so the server's own API can be used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jupyterhub  # type: ignore[import-untyped]


@dataclass
class HubApiStub:
    """The stand-in's address and the tokens it accepts (token → user name)."""

    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)


def _handler(stub: HubApiStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-JupyterHub-Version", jupyterhub.__version__)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.command == "GET" and self.path.split("?")[0].rstrip("/").endswith("/hub/api/user"):
                token = self.headers.get("Authorization", "").removeprefix("token ").removeprefix("Bearer ")
                name = stub.tokens.get(token)
                if name is None:
                    self._send(403, {"status": 403, "message": "unknown token"})
                else:
                    self._send(200, {"kind": "user", "name": name, "admin": False, "groups": [],
                                     "session_id": None,
                                     "scopes": [f"access:servers!user={name}", f"read:users:name!user={name}"]})
                return
            self._send(200, {"version": jupyterhub.__version__})

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def hub_api_with_tokens() -> Iterator[HubApiStub]:
    """Serve the stand-in; `.url` is its API URL (`http://127.0.0.1:<port>/hub/api`), `.tokens` what it
    accepts."""
    stub = HubApiStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    thread = threading.Thread(target=server.serve_forever, name="hub-api-stub", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def hub_api_stub() -> Iterator[str]:
    """Serve the stand-in; yields its API URL (`http://127.0.0.1:<port>/hub/api`)."""
    with hub_api_with_tokens() as stub:
        yield stub.url
