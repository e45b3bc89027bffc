"""A tiny hub-managed service for the tests: records its environment and who the hub says it is, and
answers HTTP on its `JUPYTERHUB_SERVICE_URL` (when it has one) with that record."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit


def whoami() -> object:
    req = urllib.request.Request(f"{os.environ['JUPYTERHUB_API_URL']}/user",
                                 headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"})
    for _ in range(100):
        try:
            with urllib.request.urlopen(req, timeout=5) as r:  # the hub on loopback
                return json.load(r)
        except OSError:
            import time

            time.sleep(0.2)
    return None


def main() -> None:
    record = {"pid": os.getpid(), "env": dict(os.environ),
              "whoami": whoami()}
    out = sys.argv[1]
    with open(out + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(out + ".tmp", out)
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if not url:
        import time

        while True:
            time.sleep(60)
    body = json.dumps(record).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    parts = urlsplit(url)
    HTTPServer((parts.hostname or "127.0.0.1", parts.port or 80), Handler).serve_forever()


if __name__ == "__main__":
    main()
