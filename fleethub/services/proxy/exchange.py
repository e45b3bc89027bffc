"""One request in flight on a client connection: its upstream connection and its response.

An exchange answers the request itself (redirects, errors) or forwards it: it takes a pooled
connection (or opens one, the only await on the request path), sends the head and streams the
body, then relays the parsed response back, re-framed for the client. A websocket's `101` turns
the exchange into a `Tunnel`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes

from fleethub.services.proxy import headers, replies
from fleethub.services.proxy.request import Request
from fleethub.services.proxy.routing import Answer, Forward
from fleethub.services.proxy.upstream import UpstreamConnection
from fleethub.services.proxy.websocket import Tunnel

if TYPE_CHECKING:
    import asyncio

    from fleethub.services.proxy.server import ClientConnection

log = logging.getLogger(__name__)

MAX_BUFFER = 256 * 1024  # body bytes held while the upstream connection is being opened
P_UPSTREAM = 1  # reasons to pause reading the client (see ClientConnection.pause)
P_BUFFER = 2


class Exchange:
    """The life of one request after its head: where it went, and how its response is relayed."""

    __slots__ = (
        "chunked",
        "client",
        "close",
        "connecting",
        "deadline",
        "eof",
        "forward",
        "local",
        "req",
        "retried",
        "reusable",
        "started",
        "switched",
        "upstream",
    )

    def __init__(self, client: ClientConnection, req: Request) -> None:
        self.client = client
        self.req = req
        self.forward: Forward | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.deadline = 0.0  # the upstream must answer by then (checked by the node's sweep); 0: none
        self.started = False  # response bytes went to the client
        self.chunked = False  # we chunk-encode the body for the client
        self.eof = False  # the upstream body ends with its connection
        self.close = False  # close the client connection after this response
        self.reusable = False  # the upstream connection can go back to the pool afterwards
        self.retried = False  # tried once more on a fresh connection (a stale pooled one), or sent to the error page
        self.switched = False  # sent to another replica of its service (the first one was dead)
        self.local = False  # answered by the proxy itself

    def start(self) -> None:
        decision = self.req.decision
        if isinstance(decision, Answer):
            self.answer(decision)
        else:
            self._forward(decision)

    def answer(self, answer: Answer) -> None:
        """Answer from the proxy. An unread body is not drained: the connection closes instead."""
        req, client = self.req, self.client
        self.close = not req.keep_alive or (req.has_body and not req.complete) or client.eof
        if answer.location is not None:
            data = replies.redirect(answer.location, close=self.close)
        elif answer.body is not None:
            data = replies.json_body(answer.status, answer.body, close=self.close)
        else:
            data = replies.error(answer.status, answer.message, as_json=replies.wants_json(req.path, req.headers),
                                 close=self.close, retry_after=1 if answer.status == 503 else None)
        req.body.clear()
        client.resume(P_BUFFER)
        client.send(data)
        self.started = self.local = True
        if req.complete or self.close:
            self._finish()

    # the request's way

    def _forward(self, fwd: Forward) -> None:
        self.forward = fwd
        conn = self.client.node.pool.take(fwd.origin)
        if conn is not None:
            self._attach(conn)
        else:
            self.connecting = self.client.loop.create_task(self._connect(fwd))

    async def _connect(self, fwd: Forward) -> None:
        node = self.client.node
        try:
            conn = await node.pool.connect(fwd.origin)
        except (OSError, TimeoutError) as exc:
            self.connecting = None
            if not self.client.closed and self._switch_replica(fwd, f"refused a connection ({exc})"):
                return
            log.info("upstream %s:%s unreachable: %s", *fwd.origin, exc)
            if self.client.exchange is self and not self.client.closed and not self._hub_error_page(fwd):
                self.answer(Answer(503, f"Service Unavailable: nothing is answering at {self.req.path[:200]}"))
            return
        self.connecting = None
        if self.client.closed or self.client.exchange is not self:
            node.pool.release(conn)
            return
        self.forward = fwd
        self._attach(conn)

    def _switch_replica(self, fwd: Forward, why: str) -> bool:
        """Send the request to another replica of `fwd`'s service (once per request); False if there is none.

        Independent of the stale-connection retry: a replica killed with connections in the pool first
        loses the pooled one, then refuses the fresh one, and the request still deserves another replica.
        """
        if fwd.service is None or self.switched:
            return False
        node = self.client.node
        node.replicas.forget(fwd.origin)  # back when it refreshes its registry key
        other = node.replicas.choose(fwd.service, avoid=fwd.origin)
        if other is None:
            return False
        log.warning("%s replica %s:%s %s; retrying on %s:%s", fwd.service, *fwd.origin, why, *other)
        self.switched = True
        self._forward(Forward(other, None, fwd.service))
        return True

    def _hub_error_page(self, fwd: Forward) -> bool:
        """A browser's request for a user server that is down gets the hub's error page (status 503).

        As configurable-http-proxy does with its error target: the request goes on as
        `GET /hub/error/503?url=<target>` to an api replica, with the browser's headers. Only for a
        page load (GET/HEAD without a body, not an API client or a websocket), and only once.
        """
        req = self.req
        if (fwd.route_key is None or req.method not in (b"GET", b"HEAD") or req.has_body
                or req.websocket or replies.wants_json(req.path, req.headers)):
            return False
        origin = self.client.node.replicas.choose("api")
        if origin is None:
            return False
        root = self.client.node.base_url.rstrip("/")
        req.target = f"{root}/hub/error/503?url=".encode("ascii") + quote_from_bytes(req.target, safe="/").encode()
        req.path = f"{root}/hub/error/503"
        self.retried = True
        self._forward(Forward(origin, None, "api"))
        return True

    def _attach(self, conn: UpstreamConnection) -> None:
        """Send the request on `conn`: head, whatever body arrived meanwhile, then the rest as it comes."""
        req, client = self.req, self.client
        self.upstream = conn
        conn.sink = self
        if client.write_paused:
            conn.pause_reading()
        conn.write(headers.request_head(
            req.method, req.target, req.headers, client_ip=client.client_ip, port=client.node.port,
            host=req.host, chunked=req.chunked, upgrade=b"websocket" if req.websocket else None,
            trusted=client.trusted, proto=client.node.scheme,
        ))
        for part in req.body:
            self._send_body(part)
        req.body.clear()
        req.buffered = 0
        client.resume(P_BUFFER)
        if req.complete:
            self.request_complete()

    def request_body(self, data: bytes) -> None:
        """Body bytes of this exchange's request, as the client sends them."""
        req = self.req
        if self.upstream is not None:
            self._send_body(data)
        elif not self.local:  # not connected yet: held, reading paused past MAX_BUFFER
            req.body.append(data)
            req.buffered += len(data)
            if req.buffered > MAX_BUFFER:
                self.client.pause(P_BUFFER)

    def request_complete(self) -> None:
        """The whole request was read."""
        if self.upstream is not None:
            if self.req.chunked:
                self.upstream.write(b"0\r\n\r\n")
            self.deadline = self.client.loop.time() + self.client.node.upstream_timeout
        elif self.local:
            self._finish()

    def _send_body(self, data: bytes) -> None:
        assert self.upstream is not None
        self.req.sent_body = True
        if self.req.chunked:  # the parser removed the client's chunk framing; ours is canonical
            self.upstream.write(b"%x\r\n" % len(data))
            self.upstream.write(data)
            self.upstream.write(b"\r\n")
        else:
            self.upstream.write(data)

    # the response's way (the upstream connection's Sink)

    def upstream_head(self, conn: UpstreamConnection, status: int, reason: bytes, hdrs: list[headers.Header],
                      http11: bool) -> None:
        req, client = self.req, self.client
        if status < 200:
            if status == 101 and req.websocket:
                self.deadline = 0.0
                client.send(headers.response_head(101, reason, hdrs, chunked=False, close=False, upgrade=b"websocket"))
                self.started = True
            elif status == 101:
                self.fail(502, "The upstream switched protocols unasked")
            elif req.http11:
                client.send(headers.response_head(status, reason, hdrs, chunked=False, close=False))
            return
        self.deadline = 0.0
        no_body = req.method == b"HEAD" or status in (204, 304)
        sized = headers.get(hdrs, b"content-length") is not None
        framed = sized or any(k.lower() == b"transfer-encoding" for k, _ in hdrs)
        self.eof = not no_body and not framed
        self.chunked = not no_body and not sized and req.http11
        self.close = (not req.keep_alive or client.eof or not req.complete
                      or (not no_body and not sized and not req.http11))
        self.reusable = (http11 and req.complete and not self.eof and req.method != b"HEAD"
                         and b"close" not in headers.tokens(hdrs, b"connection"))
        fwd = self.forward
        hsts = client.node.hsts if fwd is not None and fwd.service is not None else b""  # the hub's own answers
        client.send(headers.response_head(status, reason, hdrs, chunked=self.chunked, close=self.close, extra=hsts))
        self.started = True
        if req.method == b"HEAD":  # the parser can not know a HEAD response has no body: end it here
            self._end(reusable=False)

    def upstream_body(self, data: bytes) -> None:
        send = self.client.send
        if self.chunked:
            send(b"%x\r\n" % len(data))
            send(data)
            send(b"\r\n")
        else:
            send(data)

    def upstream_done(self, conn: UpstreamConnection) -> None:
        if conn is self.upstream:
            self._end(reusable=self.reusable)

    def upstream_upgraded(self, conn: UpstreamConnection, rest: bytes) -> None:
        client = self.client
        if conn is not self.upstream or not self.req.websocket or not self.started:
            self.fail(502, "The upstream switched protocols unasked")
            return
        assert client.transport is not None and conn.transport is not None
        client.flush()  # the 101 head goes out before any tunnelled byte
        key = self.forward.route_key if self.forward is not None else None
        tunnel = Tunnel(client.transport, conn.transport, key=key, activity=client.node.activity,
                        on_close=client.node.tunnels, meter=client.node)
        conn.tunnel = tunnel
        if rest:
            tunnel.to_client(rest)
        client.tunnel_opened(tunnel)

    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None:
        if conn is not self.upstream:
            return
        self.upstream = None
        if self.started:
            if self.eof:  # the body was delimited by the end of the connection: complete
                self._end(reusable=False)
            else:
                log.info("upstream %s:%s broke off a response: %s", *conn.origin, error)
                self.client.close()
            return
        untouched = not conn.got_bytes and not self.req.sent_body and self.forward is not None
        if untouched and conn.reused and not self.retried and self.forward:
            # a pooled connection the upstream had closed meanwhile: once more on a fresh one
            self.retried = True
            self.connecting = self.client.loop.create_task(self._connect(self.forward))
            return
        if (untouched and self.forward and self.req.method in (b"GET", b"HEAD", b"OPTIONS") and not self.req.upgrade
                and self._switch_replica(self.forward, f"dropped the request ({error})")):
            # a hub replica died under a request that changes nothing, before a byte of its answer: any
            # other replica answers it the same (never a user server: those have no replicas)
            return
        log.info("upstream %s:%s failed: %s", *conn.origin, error)
        self.fail(502, "The upstream did not answer properly")

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause(P_UPSTREAM)
        else:
            self.client.resume(P_UPSTREAM)

    def hold(self) -> None:
        self.client.hold()

    def flush(self) -> None:
        self.client.flush()

    # endings

    def _end(self, *, reusable: bool) -> None:
        conn, self.upstream = self.upstream, None
        if conn is not None:
            if reusable:
                self.client.node.pool.release(conn)
            else:
                conn.close()
        if self.chunked:
            self.client.send(b"0\r\n\r\n")
        self._finish()

    def _finish(self) -> None:
        self.deadline = 0.0
        self.client.exchange_done(self, close=self.close)

    def fail(self, status: int, message: str) -> None:
        """Give up: answer `status` if nothing was sent yet, then close the client connection."""
        self.abort()
        req, client = self.req, self.client
        if not self.started and not client.closed:
            client.send(replies.error(status, message, as_json=replies.wants_json(req.path, req.headers), close=True))
        client.close()

    def timed_out(self) -> None:
        """The deadline passed without a response head."""
        self.deadline = 0.0
        if not self.started:
            log.info("upstream did not answer %s within %ss", self.req.path[:200], self.client.node.upstream_timeout)
            self.fail(504, "The upstream did not answer in time")

    def abort(self) -> None:
        """Drop the upstream side (the client is gone, or the exchange failed)."""
        self.deadline = 0.0
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.upstream is not None:  # mid-exchange: the connection can not be reused
            self.upstream.close()
            self.upstream = None
