"""Minimal keep-alive HTTP/1.1 and websocket clients over asyncio streams, for the benchmark's own traffic.

Only what the benchmark needs: requests with a Content-Length body, responses framed by
Content-Length, chunked encoding or connection close; websocket handshake, masked frames out,
unmasked frames in, close and abort.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD = 64 * 1024


class WireError(Exception):
    """The peer broke the protocol or closed the connection unexpectedly."""


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; repeated ones: the last
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise WireError(f"not an HTTP response: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read a response's status line and headers (skipping 100 Continue)."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise WireError("connection closed before a response" if not exc.partial
                            else f"connection closed in a response head: {exc.partial[:100]!r}") from None
        except asyncio.LimitOverrunError:
            raise WireError("response head too large") from None
        status, headers = _parse_head(head[:-4])
        if status != 100:
            return status, headers


async def read_body(reader: asyncio.StreamReader, status: int, headers: dict[str, str],
                    head_only: bool = False) -> bytes:
    """Read the body that follows a response head."""
    if head_only or status in (204, 304) or 100 <= status < 200:
        return b""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return b"".join(parts)
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        return await reader.read()  # until the server closes
    except asyncio.IncompleteReadError:
        raise WireError("connection closed in a response body") from None


class HttpConn:
    """One keep-alive connection; requests one at a time."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.base_headers = {"Host": f"{host}:{port}", **(headers or {})}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD * 4)

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        """Send one request and read its whole response; reconnects when the previous one was closed."""
        if self.writer is None or self.writer.is_closing():
            await self.connect()
        assert self.reader is not None and self.writer is not None
        hdrs = {**self.base_headers, **(headers or {})}
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.writer.write(head.encode("latin-1") + (body or b""))
        try:
            status, rheaders = await read_head(self.reader)
            rbody = await read_body(self.reader, status, rheaders, head_only=method == "HEAD")
        except BaseException:  # broken, or cancelled mid-response: the connection cannot be reused
            self.close()
            raise
        if rheaders.get("connection", "").lower() == "close" or (
                "content-length" not in rheaders and "transfer-encoding" not in rheaders and status >= 200):
            self.close()
        return Response(status, rheaders, rbody)

    @property
    def local_port(self) -> int:
        assert self.writer is not None
        return int(self.writer.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None
        self.reader = None


class RouteApi:
    """The configurable-http-proxy route API (`/api/routes`), spoken by both proxies."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host = host
        self.port = port
        self.token = token
        self._conn: HttpConn | None = None

    def conn(self) -> HttpConn:
        """A new keep-alive connection to the API."""
        return HttpConn(self.host, self.port, {"Authorization": f"token {self.token}"})

    async def _default(self) -> HttpConn:
        if self._conn is None:
            self._conn = self.conn()
        return self._conn

    async def add(self, path: str, target: str, data: dict[str, Any] | None = None,
                  conn: HttpConn | None = None) -> int:
        c = conn or await self._default()
        body = json.dumps({"target": target, **(data or {})}).encode()
        r = await c.request("POST", "/api/routes" + path, body, {"Content-Type": "application/json"})
        if r.status != 201:
            raise WireError(f"POST /api/routes{path} answered {r.status}: {r.body[:300]!r}")
        return r.status

    async def delete(self, path: str, conn: HttpConn | None = None) -> int:
        c = conn or await self._default()
        r = await c.request("DELETE", "/api/routes" + path)
        if r.status not in (204, 404):
            raise WireError(f"DELETE /api/routes{path} answered {r.status}: {r.body[:300]!r}")
        return r.status

    async def routes(self) -> dict[str, Any]:
        c = await self._default()
        r = await c.request("GET", "/api/routes")
        if r.status != 200:
            raise WireError(f"GET /api/routes answered {r.status}: {r.body[:300]!r}")
        data = r.json()
        if not isinstance(data, dict):
            raise WireError(f"GET /api/routes: not an object: {r.body[:200]!r}")
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _mask(key: bytes, payload: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


class WsConn:
    """A websocket client connection (binary frames, no extensions)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]) -> None:
        self.reader = reader
        self.writer = writer
        self.headers = headers

    @classmethod
    async def open(cls, host: str, port: int, path: str, timeout: float = 10.0) -> WsConn:
        """Connect and upgrade; raises `WsRefused` (with the status) when the answer is not 101.

        Raises:
            TimeoutError: no answer within `timeout` (the connection is closed).
        """
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD * 4)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        try:
            async with asyncio.timeout(timeout):
                status, headers = await read_head(reader)
        except BaseException:
            writer.transport.abort()
            raise
        if status != 101:
            writer.close()
            raise WsRefused(status, headers)
        return cls(reader, writer, headers)

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        key = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        self.writer.write(head + key + _mask(key, payload))

    async def recv(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload)."""
        try:
            first, second = await self.reader.readexactly(2)
            n = second & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            mask = await self.reader.readexactly(4) if second & 0x80 else b""
            payload = await self.reader.readexactly(n) if n else b""
        except asyncio.IncompleteReadError:
            raise WireError("websocket closed by the peer") from None
        return first & 0x0F, _mask(mask, payload) if mask else payload

    async def echo(self, payload: bytes) -> bytes:
        self.send(payload)
        while True:
            opcode, data = await self.recv()
            if opcode in (0x1, 0x2, 0x0):
                return data
            if opcode == 0x8:
                raise WireError("websocket closed by the peer (close frame)")

    async def close(self, timeout: float = 5.0) -> bool:
        """Close handshake; returns whether the peer answered (close frame or EOF) in time."""
        answered = False
        try:
            self.send(b"\x03\xe8", opcode=0x8)
            async with asyncio.timeout(timeout):
                while True:
                    opcode, _ = await self.recv()
                    if opcode == 0x8:
                        answered = True
                        break
        except WireError:
            answered = True  # EOF
        except (TimeoutError, OSError):
            pass
        self.writer.close()
        return answered

    async def wait_closed_by_peer(self, timeout: float) -> bool:
        """Wait for EOF (or a close frame) from the peer; returns whether it came within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    opcode, _ = await self.recv()
                    if opcode == 0x8:
                        return True
        except (WireError, OSError):
            return True
        except TimeoutError:
            return False
        finally:
            self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()


class WsRefused(WireError):
    """The server answered an upgrade request with something other than 101 (the connection is closed)."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"websocket upgrade answered {status}")
        self.status = status
        self.headers = headers
