"""The soak's user server: bench/proxy's HTTP + websocket-echo backend on the address the hub gives.

Listens where `JUPYTERHUB_SERVICE_URL` says (as jupyterhub-singleuser does), answers every HTTP request
200 and echoes websocket frames (`bench/proxy/backend.py`), and exits on SIGTERM.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))

import uvloop
from backend import serve


def main() -> None:
    url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
    uvloop.run(serve(os.environ.get("JUPYTERHUB_USER", "soak"), url.hostname or "127.0.0.1", url.port or 80, None))


if __name__ == "__main__":
    main()
