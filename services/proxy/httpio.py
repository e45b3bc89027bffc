"""HTTP/1.1 message heads and body framing over asyncio streams, with strict parsing.

Bodies are copied chunk by chunk (never held whole in memory). Anything ambiguous about framing
(both Content-Length and Transfer-Encoding, a bad length, a malformed chunk) is a `BadMessage`,
answered 400 and the connection closed, so requests cannot be smuggled past the proxy.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "proxy-connection"}
)


class BadMessage(Exception):
    """The peer sent something that is not valid HTTP/1.1."""


@dataclass
class Head:
    """A request or response head."""

    start: tuple[str, str, str]  # (method, target, version) or (version, status, reason)
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def tokens(self, name: str) -> set[str]:
        name = name.lower()
        out: set[str] = set()
        for k, v in self.headers:
            if k.lower() == name:
                out.update(t.strip().lower() for t in v.split(",") if t.strip())
        return out


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """Read one message head; None on a clean EOF before any byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadMessage("truncated head") from None
    except asyncio.LimitOverrunError:
        raise BadMessage("head too large") from None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    while lines and not lines[0]:
        lines.pop(0)  # tolerate stray CRLF between pipelined messages
    if not lines:
        return None
    parts = lines[0].split(" ", 2)
    if len(parts) < 2:
        raise BadMessage("bad start line")
    start = (parts[0], parts[1], parts[2] if len(parts) > 2 else "")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise BadMessage("bad header line")
        headers.append((name, value.strip()))
    return Head(start, headers)


def body_framing(head: Head, *, request: bool, method: str = "GET", status: int = 200) -> tuple[str, int]:
    """How the body is delimited: ("none", 0), ("length", n), ("chunked", 0) or ("close", 0)."""
    te = head.tokens("transfer-encoding")
    cls = [v for k, v in head.headers if k.lower() == "content-length"]
    if te:
        if cls:
            raise BadMessage("both Content-Length and Transfer-Encoding")
        if te != {"chunked"}:
            raise BadMessage("unsupported Transfer-Encoding")
        if not request and (method == "HEAD" or status in (204, 304) or status < 200):
            return "none", 0
        return "chunked", 0
    if cls:
        if len(set(cls)) != 1 or not cls[0].isdigit():
            raise BadMessage("bad Content-Length")
        n = int(cls[0])
        if not request and (method == "HEAD" or status in (204, 304) or status < 200):
            return "none", 0
        return "length", n
    if request or method == "HEAD" or status in (204, 304) or status < 200:
        return "none", 0
    return "close", 0


async def copy_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: tuple[str, int]) -> None:
    """Copy one body from `reader` to `writer` as it arrives, keeping its framing."""
    kind, n = framing
    if kind == "length":
        while n > 0:
            data = await reader.read(min(n, CHUNK))
            if not data:
                raise BadMessage("body ended early")
            writer.write(data)
            n -= len(data)
            await writer.drain()
    elif kind == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line[:-2].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadMessage("bad chunk size") from None
            writer.write(line)
            if size == 0:
                while True:  # trailers, then the final CRLF
                    trailer = await reader.readuntil(b"\r\n")
                    writer.write(trailer)
                    if trailer == b"\r\n":
                        break
                await writer.drain()
                return
            remaining = size + 2
            while remaining > 0:
                data = await reader.read(min(remaining, CHUNK))
                if not data:
                    raise BadMessage("chunk ended early")
                writer.write(data)
                remaining -= len(data)
                await writer.drain()
    elif kind == "close":
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()


def serialize(start: str, headers: list[tuple[str, str]]) -> bytes:
    """A head as bytes."""
    return (start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")


def forward_headers(head: Head, *, keep_upgrade: bool, request: bool = True) -> list[tuple[str, str]]:
    """The end-to-end headers of `head`: hop-by-hop ones (and those named by Connection) removed."""
    named = head.tokens("connection")
    drop = HOP_BY_HOP | named
    out = []
    for k, v in head.headers:
        low = k.lower()
        if low == "transfer-encoding":
            out.append((k, v))  # the body is relayed with its chunked framing unchanged
        elif low in drop and not (keep_upgrade and low == "upgrade"):
            continue
        elif request and low.startswith("x-forwarded-"):
            continue  # set by us, never believed from the client
        else:
            out.append((k, v))
    return out
