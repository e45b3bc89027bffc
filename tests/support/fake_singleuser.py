"""A stand-in user server for tests: listens where the hub says, answers who it serves.

It reads `JUPYTERHUB_SERVICE_URL` like jupyterhub-singleuser, answers every path under
`JUPYTERHUB_SERVICE_PREFIX` with 200 JSON `{"user", "server", "path", "query"}`, and exits on SIGTERM.
Environment knobs for tests: `FAKE_START_DELAY` (seconds before listening), `FAKE_EXIT_CODE` (exit at
once with this code), `FAKE_ENV_DUMP` (write the environment as JSON to this file), `FAKE_EXIT_AFTER`
(exit with code 3 this many seconds after listening), `FAKE_TERM_DELAY` (seconds between SIGTERM and the
exit: a slow stop). `FAKE_PLAN`, JSON `{"<user>": {"FAKE_START_DELAY": "30", ...}}`, sets knobs per user
(one stack, users that misbehave differently).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = urlsplit(self.path)
        prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
        if not parts.path.startswith(prefix.rstrip("/")):
            body = json.dumps({"error": "outside prefix", "path": parts.path}).encode()
            self.send_response(404)
        else:
            body = json.dumps(
                {
                    "user": os.environ.get("JUPYTERHUB_USER"),
                    "server": os.environ.get("JUPYTERHUB_SERVER_NAME"),
                    "path": parts.path,
                    "query": parts.query,
                    "host": self.headers.get("Host"),
                    "forwarded_for": self.headers.get("X-Forwarded-For"),
                }
            ).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    plan = json.loads(os.environ.get("FAKE_PLAN") or "{}").get(os.environ.get("JUPYTERHUB_USER", ""), {})
    os.environ.update({str(k): str(v) for k, v in plan.items()})
    if os.environ.get("FAKE_ENV_DUMP"):
        with open(os.environ["FAKE_ENV_DUMP"], "w") as f:
            json.dump(dict(os.environ), f)
    if os.environ.get("FAKE_EXIT_CODE"):
        return int(os.environ["FAKE_EXIT_CODE"])
    term_delay = float(os.environ.get("FAKE_TERM_DELAY", "0"))

    def on_term(*_: object) -> None:
        time.sleep(term_delay)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    time.sleep(float(os.environ.get("FAKE_START_DELAY", "0")))
    url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
    server = ThreadingHTTPServer((url.hostname or "127.0.0.1", url.port or 80), Handler)
    server.daemon_threads = True
    if os.environ.get("FAKE_EXIT_AFTER"):
        signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
        signal.setitimer(signal.ITIMER_REAL, float(os.environ["FAKE_EXIT_AFTER"]))
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
