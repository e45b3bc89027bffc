"""The client side of a proxy node: one `asyncio.Protocol` per client connection, parsed by httptools.

Each request is routed when its head is complete, then streamed by its `Exchange`: body bytes go
upstream as they arrive and response bytes come back as they arrive; each side's full write
buffer pauses reading on the other side, so no body is ever held whole. Requests on one
connection are answered in order (pipelined ones wait, with reading paused). Nothing on this path
awaits shared state: the only await is opening a new upstream connection when the pool has none.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import cast

import httptools

from fleethub.services.proxy import headers
from fleethub.services.proxy.exchange import MAX_BUFFER, P_BUFFER, P_UPSTREAM, Exchange
from fleethub.services.proxy.node import Node
from fleethub.services.proxy.request import MAX_HEAD, HeadTooLarge, Request, prepare
from fleethub.services.proxy.routing import Answer, Forward
from fleethub.services.proxy.websocket import Tunnel

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 60.0  # a keep-alive client connection with no request in flight
HEAD_TIMEOUT = 30.0  # a request head that takes longer to arrive is a slow-loris

# why reading from the client is paused (reading resumes when no reason is left); P_UPSTREAM (the
# upstream's write buffer is full) and P_BUFFER (body held while connecting) come from the exchange
P_PIPELINE = 4  # a request waits behind the one in flight
P_UPGRADE = 8  # waiting for the upstream's 101
P_DONE = 16  # no further request will be read on this connection


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the connection reads no more requests)."""


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, runs their exchanges one after the other."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.trusted = False  # the client is a load balancer whose X-Forwarded-* we believe
        self.local: bytes | None = None  # the host:port the client dialled (a node bound to every interface)
        self.incoming: Request | None = None  # being parsed
        self.queue: deque[Request] = deque()  # parsed, waiting for the exchange in flight
        self.exchange: Exchange | None = None  # in flight (kept for flow control once it is a tunnel)
        self.tunnel: Tunnel | None = None
        self.early = bytearray()  # bytes after an upgrade request's head, for the tunnel
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.stop_parsing = False
        self.upgrading = False
        self.eof = False
        self.last_active = self.loop.time()
        self._out: list[bytes] | None = None  # client-bound bytes held while one upstream read is handled

    # transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        peer = self.transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else ""
        self.trusted = self.node.trusted(self.client_ip)
        hosts = self.node.hosts
        if hosts is not None and hosts.local:
            self.local = hosts.local_name(self.transport.get_extra_info("sockname"))
        if not self.node.connections:
            self.node.arrived.notify()
        self.node.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        self.node.bytes_in += len(data)
        if self.tunnel is not None:
            self.tunnel.to_upstream(data)
            return
        if self.upgrading:  # bytes for the tunnel to come
            self._early(data)
            return
        if self.stop_parsing:
            return
        upstream = self.exchange.upstream if self.exchange is not None else None
        if upstream is not None:  # what this read produces for the upstream goes out in one write
            upstream.hold()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrading = True
            self._early(data[int(exc.args[0]):])
        except httptools.HttpParserError as exc:
            if not self.stop_parsing:
                cause = exc.__context__
                too_large = isinstance(cause, HeadTooLarge)
                if cause is not None and not too_large:
                    log.error("request parser callback failed", exc_info=cause)
                self._bad_request(431 if too_large else 400,
                                  "Request head too large" if too_large else f"Bad request: {exc}")
        finally:
            if upstream is not None:
                upstream.flush()

    def eof_received(self) -> bool:
        if self.tunnel is None and self.incoming is None and (self.exchange is not None or self.queue):
            self.eof = True  # a half-closed client still gets its answers, then the connection closes
            self.stop_parsing = True
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.node.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        elif self.exchange is not None:
            self.exchange.abort()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None and self.exchange.upstream is not None:
            self.exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None and self.exchange.upstream is not None:
            self.exchange.upstream.resume_reading()

    # parser callbacks

    def on_message_begin(self) -> None:
        if self.stop_parsing:
            raise _Stop
        self.node.requests += 1
        self.incoming = Request(self.loop.time())

    def on_url(self, url: bytes) -> None:
        req = self.incoming
        assert req is not None
        req.target += url
        req.head_size += len(url)
        if req.head_size > MAX_HEAD:
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.incoming
        assert req is not None
        if req.headers_done:
            return  # trailers of a chunked body are not forwarded
        req.headers.append((name, value))
        req.head_size += len(name) + len(value) + 4
        if req.head_size > MAX_HEAD:
            raise HeadTooLarge

    def on_headers_complete(self) -> None:
        req = self.incoming
        assert req is not None
        req.headers_done = True
        parser = self.parser
        version = parser.get_http_version()
        req.keep_alive = version == "1.1" and parser.should_keep_alive()
        prepare(req, parser.get_method(), version, upgrade=parser.should_upgrade(), table=self.node.table,
                replicas=self.node.replicas, host_ok=self._host_ok if self.node.hosts is not None else None,
                base_url=self.node.base_url)
        if isinstance(req.decision, Forward) and req.decision.route_key is not None:
            self.node.activity.touch(req.decision.route_key)
        self.queue.append(req)
        if self.exchange is None:
            self._next()
        else:
            self.pause(P_PIPELINE)

    def on_body(self, body: bytes) -> None:
        req = self.incoming
        assert req is not None
        exchange = self.exchange
        if exchange is not None and exchange.req is req:
            exchange.request_body(body)
        else:  # queued behind the exchange in flight
            req.body.append(body)
            req.buffered += len(body)
            if req.buffered > MAX_BUFFER:
                self.pause(P_BUFFER)

    def on_message_complete(self) -> None:
        req = self.incoming
        assert req is not None
        self.incoming = None
        req.complete = True
        if not req.keep_alive:
            self.stop_parsing = True
            self.pause(P_DONE)
        if self.exchange is not None and self.exchange.req is req:
            self.exchange.request_complete()

    def _host_ok(self, req: Request) -> bool:
        """The request names the hub: its Host, or the X-Forwarded-Host a trusted load balancer sets."""
        hosts = self.node.hosts
        assert hosts is not None
        if self.trusted:
            forwarded = headers.first(req.headers, b"x-forwarded-host")
            if forwarded is not None:
                return hosts.allows(forwarded, self.local)
        return req.host is None or hosts.allows(req.host, self.local)  # None: HTTP/1.0 without Host

    # exchanges

    def _next(self) -> None:
        """Start the exchanges of queued requests, in order, while each one finishes at once."""
        while self.exchange is None and self.queue and not self.closed:
            self.exchange = Exchange(self, self.queue.popleft())
            self.exchange.start()
        if not self.queue:
            self.resume(P_PIPELINE)

    def exchange_done(self, exchange: Exchange, *, close: bool) -> None:
        """The exchange's response is complete: close, or go on with the next request."""
        if exchange is not self.exchange:
            return
        self.exchange = None
        self.resume(P_UPSTREAM)
        self.last_active = self.loop.time()
        if close or (self.eof and not self.queue):
            self.close()
        else:
            self._next()

    def tunnel_opened(self, tunnel: Tunnel) -> None:
        """The exchange became a websocket: from now on bytes are piped both ways."""
        self.tunnel = tunnel
        if self.early:
            tunnel.to_upstream(bytes(self.early))
            self.early.clear()
        for bit in (P_UPGRADE, P_DONE, P_BUFFER, P_PIPELINE):
            self.resume(bit)

    def _bad_request(self, status: int, message: str) -> None:
        """The client sent something unparseable: answer it in turn (after requests before it), then close."""
        self.stop_parsing = True
        self.pause(P_DONE)
        req, self.incoming = self.incoming, None
        if req is not None and self.exchange is not None and self.exchange.req is req:
            self.exchange.fail(status, message)  # its body was streaming: the exchange is spoiled
            return
        if req is None or not req.headers_done:  # the broken head gets its own answer
            req = Request(self.loop.time())
            self.queue.append(req)
        req.decision = Answer(status, message)  # a queued request with a broken body gets the error instead
        req.keep_alive = False
        req.complete = True
        self._next()

    def _early(self, data: bytes) -> None:
        if data:
            self.early += data
        self.pause(P_UPGRADE)
        if len(self.early) > MAX_BUFFER:
            self.close()

    # output and flow control (used by the exchange)

    def pause(self, bit: int) -> None:
        """Stop reading from the client for reason `bit`."""
        if not self.paused and not self.closed and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= bit

    def resume(self, bit: int) -> None:
        """Reason `bit` to pause is gone: read again if it was the last."""
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self.closed and self.transport is not None:
                self.transport.resume_reading()

    def hold(self) -> None:
        """Hold client-bound bytes until `flush` (while the upstream connection handles one read)."""
        if self._out is None:
            self._out = []

    def flush(self) -> None:
        """Write the held bytes in one go: a small response goes out in one segment, not three."""
        out, self._out = self._out, None
        if out and self.transport is not None and not self.closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def send(self, data: bytes) -> None:
        """Write bytes to the client (held while an upstream read is handled)."""
        self.node.bytes_out += len(data)
        if self._out is not None:
            self._out.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        """Close the connection once the bytes written so far are flushed."""
        self.stop_parsing = True
        self.flush()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    # housekeeping (the node's sweep and shutdown)

    def check_idle(self, now: float) -> None:
        """Enforce the upstream deadline; close the connection if it idles, or dribbles a head, for too long."""
        exchange = self.exchange
        if exchange is not None and exchange.deadline and now > exchange.deadline:
            exchange.timed_out()
        elif self.tunnel is None and exchange is None and not self.queue:
            if self.incoming is not None and not self.incoming.headers_done:
                if now - self.incoming.started > HEAD_TIMEOUT:
                    self.close()
            elif now - self.last_active > IDLE_TIMEOUT:
                self.close()

    def close_if_idle(self) -> bool:
        """Close the connection if no request is in flight (websockets are closed too); returns whether it was."""
        if self.tunnel is not None:
            self.tunnel.close()
            return True
        if self.exchange is None and not self.queue:
            self.close()
            return True
        return False

    def abort(self) -> None:
        """Cut the connection now."""
        if self.tunnel is not None:
            self.tunnel.close()
        if self.transport is not None:
            self.transport.abort()
