"""A minimal HTTP GET for readiness checks: status code only, no dependency, no redirects."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


async def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status code of `GET url`, or None if nothing answered in time."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts_ = line.split()
        return int(parts_[1]) if len(parts_) >= 2 and parts_[1].isdigit() else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
