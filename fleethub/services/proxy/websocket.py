"""A websocket after its `101`: bytes piped both ways until either side closes, which closes both."""

from __future__ import annotations

import asyncio
from typing import Protocol

from fleethub.services.proxy.activity import Activity

# activity is bumped at most this often per tunnel: a busy websocket costs one float compare per read
BUMP_EVERY = 1.0
# a side that will not take the last bytes is cut off after this long, so no socket outlives its peer
CLOSE_GRACE = 5.0



class Meter(Protocol):
    """What counts a node's bytes sent to clients (`Node`)."""

    bytes_out: int

class Tunnel:
    """The two transports of one upgraded connection. Flow control stays with the two protocols."""

    __slots__ = ("_last", "_loop", "_on_close", "activity", "client", "closed", "key", "meter", "upstream")

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        *,
        key: str | None,
        activity: Activity,
        on_close: dict[str, set[Tunnel]],
        meter: Meter | None = None,
    ) -> None:
        self.meter = meter  # counts the bytes sent to the client (the node's `bytes_out`)
        self.client = client
        self.upstream = upstream
        self.key = key
        self.activity = activity
        self._loop = asyncio.get_running_loop()
        self._last = 0.0
        self.closed = False
        self._on_close = on_close
        if key is not None:
            on_close.setdefault(key, set()).add(self)

    def _bump(self) -> None:
        if self.key is not None:
            now = self._loop.time()
            if now - self._last >= BUMP_EVERY:
                self._last = now
                self.activity.touch(self.key, request=False)

    def to_upstream(self, data: bytes) -> None:
        """Bytes the client sent."""
        if not self.closed:
            self.upstream.write(data)
            self._bump()

    def to_client(self, data: bytes) -> None:
        """Bytes the upstream sent."""
        if not self.closed:
            if self.meter is not None:
                self.meter.bytes_out += len(data)
            self.client.write(data)
            self._bump()

    def close(self) -> None:
        """Close both sides (idempotent): buffered bytes are flushed, then both are cut after a grace."""
        if self.closed:
            return
        self.closed = True
        if self.key is not None:
            peers = self._on_close.get(self.key)
            if peers is not None:
                peers.discard(self)
                if not peers:
                    del self._on_close[self.key]
        for transport in (self.client, self.upstream):
            transport.close()
            self._loop.call_later(CLOSE_GRACE, transport.abort)
