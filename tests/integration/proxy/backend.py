"""Small HTTP/1.1 upstreams for proxy tests, written on asyncio streams (independent of the proxy's parser).

Paths (any prefix): `/download?n=N[&cl=1]` streams N bytes (chunked, or with Content-Length);
`/upload[?stall=S]` counts the request body (after S seconds of not reading it); `/slow?sleep=S`
answers late; `/nocontent` → 204; `/eof?n=N` → a body delimited by closing the connection; every
other path echoes the request as JSON. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

BLOCK = b"x" * 65536


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    received: int


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, list[tuple[str, str]]] | None:
    """Request line and headers; None on EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return method, target, headers


async def count_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> int:
    """Read a request body without keeping it; returns its payload size."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return total
            left = size
            while left:
                left -= len(await reader.read(min(left, 1 << 20)))
            await reader.readexactly(2)
            total += size
    n = int(headers.get("content-length", "0"))
    left = n
    while left:
        chunk = await reader.read(min(left, 1 << 20))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(chunk)
    return n


@dataclass
class Backend:
    """One upstream on a free port of 127.0.0.1."""

    name: str
    server: asyncio.Server | None = None
    connections: int = 0
    seen: list[Seen] = field(default_factory=list)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 20)
        return self

    async def stop(self) -> None:
        """Stop listening and cut every open connection (a dead server)."""
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request = await read_request(reader)
        if request is None:
            return False
        method, target, raw = request
        headers = {k.lower(): v for k, v in raw}
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if "stall" in query:
            await asyncio.sleep(float(query["stall"]))
        received = await count_body(reader, headers)
        self.seen.append(Seen(method, target, headers, raw, received))
        path = url.path
        if "sleep" in query:
            await asyncio.sleep(float(query["sleep"]))
        if path.endswith("/download"):
            await self._download(writer, int(query["n"]), sized="cl" in query)
        elif path.endswith("/nocontent"):
            writer.write(b"HTTP/1.1 204 No Content\r\nX-Backend: " + self.name.encode() + b"\r\n\r\n")
        elif path.endswith("/eof"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"e" * int(query["n"]))
            await writer.drain()
            return False
        else:
            body = json.dumps({"backend": self.name, "method": method, "path": target, "headers": headers,
                               "received": received}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Backend: " + self.name.encode()
                         + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + (b"" if method == "HEAD" else body))
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    async def _download(self, writer: asyncio.StreamWriter, n: int, *, sized: bool) -> None:
        framing = b"Content-Length: %d" % n if sized else b"Transfer-Encoding: chunked"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + framing + b"\r\n\r\n")
        while n > 0:
            part = BLOCK[: min(n, len(BLOCK))]
            writer.write(part if sized else b"%x\r\n" % len(part) + part + b"\r\n")
            n -= len(part)
            await writer.drain()
        if not sized:
            writer.write(b"0\r\n\r\n")

