"""A stand-in for the hub's REST API that a real `jupyterhub-singleuser` talks to (`GET
$JUPYTERHUB_API_URL/` for `X-JupyterHub-Version` at start, `GET …/user` to check a token, activity posts):
for tests of a backend alone, without a hub."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jupyterhub import __version__ as JUPYTERHUB_VERSION  # type: ignore[import-untyped]


@dataclass
class HubApiStub:
    """The stand-in's address and the tokens it accepts (token → user name)."""

    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)


def _handler(stub: HubApiStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-JupyterHub-Version", JUPYTERHUB_VERSION)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/hub/api/user"):
                token = self.headers.get("Authorization", "").removeprefix("token ").removeprefix("Bearer ")
                name = stub.tokens.get(token)
                if name is None:
                    self._answer(403, {"status": 403, "message": "unknown token"})
                    return
                self._answer(200, {"kind": "user", "name": name, "admin": False, "groups": [], "session_id": None,
                                   "scopes": [f"access:servers!user={name}", f"read:users:name!user={name}"]})
                return
            self._answer(200, {"version": JUPYTERHUB_VERSION})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(200, {})

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def hub_api_stub() -> Iterator[HubApiStub]:
    """Serve the stand-in on a free loopback port; `.url` is its `hub_api_url` (…/hub/api)."""
    stub = HubApiStub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
