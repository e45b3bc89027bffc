"""Imports nats-py without aiohttp: first among the bus package's imports, so before any `nats` import.

nats-py imports aiohttp, when it is installed, for its websocket transport alone (`ws://` URLs), which
fleethub does not use (`nats://`, `tls://`): that costs every service process about 12 MB. When nothing
in the process has imported aiohttp yet, nats is imported with aiohttp hidden; aiohttp stays importable
for anyone else afterwards.
"""

from __future__ import annotations

import sys

if "nats" not in sys.modules and "aiohttp" not in sys.modules:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # an import of it now raises ImportError
    try:
        import nats.aio.client  # noqa: F401
    finally:
        del sys.modules["aiohttp"]
