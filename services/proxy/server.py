"""The client side of a proxy node: one task per client connection, keep-alive, streaming both ways."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from urllib.parse import quote

from services.proxy.activity import Activity
from services.proxy.httpio import BadMessage, Head, body_framing, copy_body, forward_headers, read_head, serialize
from services.proxy.table import RouteTable
from services.proxy.upstream import Pool
from services.proxy.watch import Registry

log = logging.getLogger(__name__)

AUTH_PREFIXES = ("/hub/login", "/hub/logout", "/hub/signup", "/hub/oauth_callback", "/hub/api/oauth2/")
_USER_PATH = re.compile(r"^/user/([^/?]+)(/[^?]*)?(\?.*)?$")
WS_ACTIVITY_EVERY = 1.0


class ClientGone(Exception):
    """The client closed its connection."""


class ProxyNode:
    """Forwards requests by the route table and registry of one node."""

    def __init__(self, table: RouteTable, registry: Registry, activity: Activity, ready: asyncio.Event,
                 pool: Pool, port: int, timeout: float) -> None:
        self.table = table
        self.registry = registry
        self.activity = activity
        self.ready = ready
        self.pool = pool
        self.port = port
        self.timeout = timeout

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection until it closes (or we must close it)."""
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if peer else ""
        try:
            while True:
                try:
                    head = await asyncio.wait_for(read_head(reader), 300)
                except (TimeoutError, ConnectionError):
                    return
                if head is None:
                    return
                keep = await self._one(head, reader, writer, client_ip)
                if not keep:
                    return
        except BadMessage as exc:
            await self._reply(writer, 400, f"Bad request: {exc}", json_body=True, close=True)
        except (ConnectionError, asyncio.IncompleteReadError, ClientGone):
            pass
        except Exception:
            log.exception("proxy connection failed")
        finally:
            writer.close()

    async def _one(self, head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_ip: str) -> bool:
        method, target, version = head.start
        if not version.startswith("HTTP/1."):
            raise BadMessage("unsupported HTTP version")
        framing = body_framing(head, request=True)
        path = target.split("?", 1)[0]
        wants_close = "close" in head.tokens("connection") or version == "HTTP/1.0"
        if not target.startswith("/"):
            raise BadMessage("absolute-form or asterisk request target")

        route_key = None
        if path.startswith("/hub/") or path == "/hub":
            service = "auth" if path.startswith(AUTH_PREFIXES) else "api"
            origin = self.registry.choose(service)
        elif path in ("/", ""):
            await self._drain(reader, framing)
            return await self._redirect(writer, "/hub/", wants_close)
        else:
            hit = self.table.lookup(path) if self.ready.is_set() else None
            if hit is not None:
                origin, route_key = (hit.host, hit.port), hit.key
            elif not self.ready.is_set():
                await self._drain(reader, framing)
                await self._reply(writer, 503, "Proxy is loading its route table", json_body=True)
                return not wants_close
            else:
                m = _USER_PATH.match(target)
                if m:
                    await self._drain(reader, framing)
                    return await self._redirect(writer, "/hub" + target, wants_close)
                origin = self.registry.choose("api")
        if origin is None:
            await self._drain(reader, framing)
            await self._reply(writer, 503, "No hub service is available right now", json_body=True)
            return not wants_close
        if route_key is not None:
            self.activity.touch(route_key)
        return await self._forward(head, reader, writer, client_ip, origin, route_key, framing, wants_close,
                                   retry_service=None if route_key else ("auth" if path.startswith(AUTH_PREFIXES) else "api"))

    async def _forward(self, head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_ip: str,
                       origin: tuple[str, int], route_key: str | None, framing: tuple[str, int], wants_close: bool,
                       retry_service: str | None) -> bool:
        method, target, version = head.start
        upgrade = "websocket" in head.tokens("upgrade") and "upgrade" in head.tokens("connection")
        headers = forward_headers(head, keep_upgrade=upgrade)
        host = head.get("host") or ""
        headers += [("X-Forwarded-For", client_ip), ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", host),
                    ("X-Forwarded-Port", str(self.port))]
        headers.append(("Connection", "Upgrade") if upgrade else ("Connection", "keep-alive"))
        request_head = serialize(f"{method} {target} HTTP/1.1", headers)

        attempts = 0
        while True:
            attempts += 1
            try:
                (up_r, up_w), reused = await self.pool.get(*origin)
            except (OSError, TimeoutError):
                if retry_service is not None and attempts == 1:
                    self.registry.forget(origin)
                    nxt = self.registry.choose(retry_service, avoid=origin)
                    if nxt is not None and nxt != origin:
                        origin = nxt
                        continue
                await self._drain(reader, framing)
                await self._reply(writer, 503, f"Service unavailable: {target.split('?', 1)[0]}", json_body=True)
                return not wants_close
            try:
                up_w.write(request_head)
                if framing[0] != "none":
                    await copy_body(reader, up_w, framing)
                else:
                    await up_w.drain()
                resp = await asyncio.wait_for(read_head(up_r), self.timeout)
                if resp is None:
                    raise ConnectionResetError("upstream closed")
                break
            except (ConnectionError, BadMessage, asyncio.IncompleteReadError) as exc:
                up_w.close()
                # a pooled connection may have been closed by the upstream: retry once on a new one
                if reused and framing[0] == "none" and attempts <= 2:
                    continue
                log.info("upstream %s:%s failed: %s", *origin, exc)
                await self._reply(writer, 502 if isinstance(exc, BadMessage) else 503,
                                  "The server did not answer properly", json_body=True)
                return False
            except TimeoutError:
                up_w.close()
                await self._reply(writer, 504, "The server did not answer in time", json_body=True)
                return False

        status = int(resp.start[1]) if resp.start[1].isdigit() else 502
        if upgrade and status == 101:
            writer.write(serialize(" ".join(resp.start), resp.headers))
            await writer.drain()
            await self._tunnel(reader, writer, up_r, up_w, route_key)
            return False
        resp_framing = body_framing(resp, request=False, method=method, status=status)
        out_headers = forward_headers(resp, keep_upgrade=False, request=False)
        upstream_close = "close" in resp.tokens("connection") or resp_framing[0] == "close"
        close_client = wants_close or resp_framing[0] == "close"
        out_headers.append(("Connection", "close" if close_client else "keep-alive"))
        writer.write(serialize(f"HTTP/1.1 {resp.start[1]} {resp.start[2]}", out_headers))
        try:
            await copy_body(up_r, writer, resp_framing)
        except (BadMessage, asyncio.IncompleteReadError):
            up_w.close()
            return False
        if route_key is not None and status < 300:
            self.activity.touch(route_key)
        if upstream_close:
            up_w.close()
        else:
            self.pool.put(*origin, (up_r, up_w))
        return not close_client

    async def _tunnel(self, c_r: asyncio.StreamReader, c_w: asyncio.StreamWriter, u_r: asyncio.StreamReader,
                      u_w: asyncio.StreamWriter, route_key: str | None) -> None:
        """Pipe a websocket both ways until either side closes; then close both."""
        last = [0.0]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                    if route_key is not None:
                        now = time.monotonic()
                        if now - last[0] > WS_ACTIVITY_EVERY:
                            last[0] = now
                            self.activity.touch(route_key)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass

        tasks = [asyncio.create_task(pipe(c_r, u_w)), asyncio.create_task(pipe(u_r, c_w))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            u_w.close()
            c_w.close()

    async def _drain(self, reader: asyncio.StreamReader, framing: tuple[str, int]) -> None:
        if framing[0] == "none":
            return

        class _Sink:
            def write(self, data: bytes) -> None:
                pass

            async def drain(self) -> None:
                pass

        await copy_body(reader, _Sink(), framing)  # type: ignore[arg-type]

    async def _redirect(self, writer: asyncio.StreamWriter, location: str, close: bool) -> bool:
        headers = [("Location", quote(location, safe="/?&=%:@~+!$'()*,;-._")), ("Content-Length", "0"),
                   ("Connection", "close" if close else "keep-alive")]
        writer.write(serialize("HTTP/1.1 302 Found", headers))
        await writer.drain()
        return not close

    async def _reply(self, writer: asyncio.StreamWriter, status: int, message: str, *, json_body: bool,
                     close: bool = False) -> None:
        body = json.dumps({"status": status, "message": message}).encode()
        reason = {400: "Bad Request", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Error")
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("Connection", "close" if close else "keep-alive")]
        try:
            writer.write(serialize(f"HTTP/1.1 {status} {reason}", headers) + body)
            await writer.drain()
        except ConnectionError:
            pass
