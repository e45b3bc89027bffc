"""A raw HTTP/1.1 client on one TCP connection, for what httpx hides: keep-alive, pipelining, framing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    head: bytes


class RawClient:
    """One connection to `port`; requests are written verbatim and responses read one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head_request: bool = False, timeout: float = 10.0) -> Response:
        return await asyncio.wait_for(self._response(head_request), timeout)

    async def _response(self, head_request: bool) -> Response:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if head_request or status in (204, 304) or 100 <= status < 200:
            return Response(status, headers, b"", head)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    return Response(status, headers, bytes(body), head)
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
        if "content-length" in headers:
            return Response(status, headers, await self.reader.readexactly(int(headers["content-length"])), head)
        return Response(status, headers, await self.reader.read(), head)

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF) within `timeout`."""
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except (TimeoutError, ConnectionError):
            return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def get(path: str, host: str = "hub.example", extra: str = "") -> bytes:
    """A GET request's bytes."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
