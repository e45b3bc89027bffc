"""A small raw-asyncio HTTP backend for proxy tests: echo, big download, counted upload, raw websocket echo."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from services.proxy.httpio import body_framing, read_head


async def count_body(reader: asyncio.StreamReader, framing: tuple[str, int]) -> int:
    """Read a request body and return its payload size (chunk framing not counted)."""
    kind, n = framing
    if kind == "length":
        await reader.readexactly(n)
        return n
    if kind != "chunked":
        return 0
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return total
        await reader.readexactly(size + 2)
        total += size


@dataclass
class Backend:
    name: str
    server: asyncio.Server | None = None
    hits: int = 0
    connections: int = 0
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):  # a dead replica's keep-alive connections die with it
                w.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    return
                self.hits += 1
                method, target, _ = head.start
                headers = {k.lower(): v for k, v in head.headers}
                self.seen_headers.append(headers)
                received = await count_body(reader, body_framing(head, request=True))
                if headers.get("upgrade", "").lower() == "websocket":
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    await writer.drain()
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
                    return
                if "/download" in target:
                    n = int(target.split("n=")[1])
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n")
                    block = b"x" * 65536
                    while n > 0:
                        part = block[: min(n, len(block))]
                        writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                        n -= len(part)
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    continue
                body = json.dumps({"backend": self.name, "method": method, "path": target, "headers": headers,
                                   "received": received}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
