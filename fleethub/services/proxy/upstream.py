"""Connections to upstreams: a response-parsing protocol per connection, pooled keep-alive per origin.

A connection serves one exchange at a time for a `Sink` (the exchange of a client connection),
which receives the parsed response as it arrives; between exchanges it waits, idle, in the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol, cast

import httptools

from fleethub.services.proxy.headers import Header
from fleethub.services.proxy.table import Origin
from fleethub.services.proxy.websocket import Tunnel

log = logging.getLogger(__name__)

MAX_IDLE_PER_ORIGIN = 64
MAX_HEAD = 256 * 1024  # a response head larger than this is refused (user servers run arbitrary code)
# Below the shortest common server keep-alive (uvicorn's and node's 5 s), so an idle connection is
# dropped by us before the upstream closes it under a request being sent: reuse matters under load,
# and a new loopback connection costs little when idle.
IDLE_TIMEOUT = 4.0


class Sink(Protocol):
    """The receiver of one response: the exchange of the client connection that sent the request."""

    def upstream_head(self, conn: UpstreamConnection, status: int, reason: bytes, headers: list[Header],
                      http11: bool) -> None: ...
    def upstream_body(self, data: bytes) -> None: ...
    def upstream_done(self, conn: UpstreamConnection) -> None: ...
    def upstream_upgraded(self, conn: UpstreamConnection, rest: bytes) -> None: ...
    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None: ...
    def upstream_paused(self, paused: bool) -> None: ...
    def hold(self) -> None: ...
    def flush(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to an upstream."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: Sink | None = None
        self.tunnel: Tunnel | None = None
        self.reused = False  # taken from the pool: the upstream may have closed it meanwhile
        self.got_bytes = False  # any response byte seen in the current exchange
        self.lost = False
        self.idle_since = 0.0
        self._read_paused = False
        self._status = 0
        self._reason = b""
        self._headers: list[Header] = []
        self._head_size = 0
        self._in_head = False
        self._out: list[bytes] | None = None  # upstream-bound bytes held while one client read is handled

    # transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.to_client(data)
            return
        sink = self.sink
        if sink is None:  # an idle upstream has nothing to say: whatever it is, the connection is spoiled
            self.close()
            return
        self.got_bytes = True
        sink.hold()  # the client-bound bytes of this read (say head and body) go out in one write
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.sink is sink:
                sink.upstream_upgraded(self, data[int(exc.args[0]):])
        except httptools.HttpParserError as exc:
            if self.sink is sink:
                sink.upstream_lost(self, f"invalid response from upstream: {exc}")
            self.close()
        finally:
            sink.flush()

    def eof_received(self) -> bool:
        return False  # close; connection_lost tells the sink (an EOF may end a close-delimited body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.tunnel is not None:
            self.tunnel.close()
        elif self.sink is not None:
            sink, self.sink = self.sink, None
            sink.upstream_lost(self, f"upstream closed the connection ({exc or 'EOF'})")
        else:
            self.pool.drop(self)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_paused(False)

    # parser callbacks

    def on_message_begin(self) -> None:
        self._reason = b""
        self._headers = []
        self._head_size = 0
        self._in_head = True

    def on_status(self, reason: bytes) -> None:
        self._reason += reason
        if len(self._reason) > MAX_HEAD:
            raise ValueError("response status line too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # trailers of a chunked body are dropped
            self._headers.append((name, value))
            self._head_size += len(name) + len(value)
            if self._head_size > MAX_HEAD:
                raise ValueError("response head too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._status = self.parser.get_status_code()
        if self.sink is not None:
            self.sink.upstream_head(self, self._status, self._reason, self._headers,
                                    self.parser.get_http_version() == "1.1")

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.upstream_body(body)

    def on_message_complete(self) -> None:
        if self._status >= 200 and self.sink is not None:  # 1xx are interim (101 goes on as a tunnel)
            self.sink.upstream_done(self)

    # used by the sink

    def hold(self) -> None:
        """Hold upstream-bound bytes until `flush` (while the client connection handles one read)."""
        if self._out is None:
            self._out = []

    def flush(self) -> None:
        """Write the held bytes in one go."""
        out, self._out = self._out, None
        if out and not self.lost and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def write(self, data: bytes) -> None:
        """Send bytes upstream (dropped once the connection is gone)."""
        if self._out is not None:
            self._out.append(data)
        elif not self.lost and self.transport is not None:
            self.transport.write(data)

    def pause_reading(self) -> None:
        """Stop reading the upstream while the client can not take more."""
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read the upstream again."""
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close the connection (it is never pooled again)."""
        self._out = None
        self.sink = None
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Idle keep-alive connections per origin, reused last-in first-out."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[Origin, list[UpstreamConnection]] = {}

    def take(self, origin: Origin) -> UpstreamConnection | None:
        """An idle connection to `origin`, without waiting; None if there is none."""
        idle = self._idle.get(origin)
        limit = time.monotonic() - IDLE_TIMEOUT
        while idle:
            conn = idle.pop()
            if conn.idle_since < limit:
                conn.close()
            elif not conn.lost:
                conn.reused = True
                conn.got_bytes = False
                return conn
        return None

    async def connect(self, origin: Origin) -> UpstreamConnection:
        """A new connection to `origin`.

        Raises:
            OSError: refused or unreachable.
            TimeoutError: no connection within the connect timeout.
        """
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self, origin), origin[0], origin[1]),
            self.connect_timeout,
        )
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Take back a connection whose exchange ended cleanly."""
        conn.sink = None
        if conn.lost:
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.resume_reading()  # an idle connection must see the upstream's EOF
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def drop(self, conn: UpstreamConnection) -> None:
        """Forget a connection the upstream closed while it was idle."""
        idle = self._idle.get(conn.origin)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.origin]

    def discard(self, origin: Origin) -> None:
        """Close every idle connection to `origin` (its route is gone: the port may be reused)."""
        for conn in self._idle.pop(origin, []):
            conn.close()

    def sweep(self, now: float | None = None) -> None:
        """Close connections idle for longer than `IDLE_TIMEOUT`."""
        limit = (time.monotonic() if now is None else now) - IDLE_TIMEOUT
        for origin in list(self._idle):
            keep = []
            for conn in self._idle[origin]:
                if conn.idle_since < limit:
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]

    def idle_count(self) -> int:
        """How many idle connections the pool holds."""
        return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
