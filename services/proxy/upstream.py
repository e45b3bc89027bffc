"""Keep-alive connections to upstreams, pooled per origin."""

from __future__ import annotations

import asyncio
from collections import defaultdict

MAX_IDLE_PER_ORIGIN = 64

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Pool:
    """Idle upstream connections per (host, port); a connection is reused only when fully read."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[Conn]] = defaultdict(list)

    async def get(self, host: str, port: int) -> tuple[Conn, bool]:
        """A connection and whether it was reused (a reused one may turn out closed)."""
        idle = self._idle.get((host, port))
        while idle:
            reader, writer = idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return (reader, writer), True
            writer.close()
        conn = await asyncio.wait_for(asyncio.open_connection(host, port, limit=256 * 1024), self.connect_timeout)
        return conn, False

    def put(self, host: str, port: int, conn: Conn) -> None:
        """Give back a connection whose response was read completely."""
        idle = self._idle[(host, port)]
        if len(idle) >= MAX_IDLE_PER_ORIGIN or conn[0].at_eof():
            conn[1].close()
            return
        idle.append(conn)

    def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()
