"""The benchmark's backend: a fast HTTP/1.1 + websocket-echo server, one raw asyncio Protocol on uvloop.

Every request is answered 200 with a fixed body: 1 MiB when the path (without query) ends in `/1m`,
1 KiB otherwise, always with `X-Backend: <name>` and `Content-Length`, keep-alive unless the client
asks to close. Pipelined and partial requests are parsed from one buffer; while the transport's
write buffer is over its high-water mark no further request is parsed (flow control).

A request with `Upgrade: websocket` is accepted (101) and every data frame is echoed back unmasked,
except a frame whose payload is `__abort__`: the backend then drops the TCP connection (RST) — the
benchmark's way to kill a backend connection. On a path ending in `/nows` an upgrade is refused with
a plain `503` (a server that answers a websocket request with an HTTP response).

Run: `python backend.py --name A --port-file FILE` (port 0: the kernel picks; the bound port is
written to FILE once listening).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import signal
import socket
from pathlib import Path

MAX_HEAD = 64 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ABORT = b"__abort__"


def _response(name: bytes, size: int) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
        + str(size).encode() + b"\r\nX-Backend: " + name + b"\r\n\r\n" + b"x" * size
    )


class Replies:
    """The precomputed answers of one backend."""

    def __init__(self, name: str) -> None:
        tag = name.encode()
        self.small = _response(tag, 1024)
        self.large = _response(tag, 1024 * 1024)
        self.bad = (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\nX-Backend: " + tag
                    + b"\r\n\r\n")
        self.refused = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n"
                        b"X-Backend: " + tag + b"\r\n\r\nnot a websocket, no")
        self.tag = tag


def _unmask(mask: bytes, payload: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


class Backend(asyncio.Protocol):
    """One client connection: HTTP requests until an upgrade, then websocket frames."""

    __slots__ = ("buf", "paused", "replies", "transport", "ws")

    def __init__(self, replies: Replies) -> None:
        self.replies = replies
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.paused = False
        self.ws = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio classes

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.buf.clear()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.paused:
            self._process()

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.buf and self.transport is not None:
            self._process()

    def _process(self) -> None:
        if self.ws:
            self._frames()
            return
        buf = self.buf
        while not self.paused and self.transport is not None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._fail()
                return
            head = bytes(buf[:end])
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                self._fail()
                return
            path = parts[1].split(b"?", 1)[0]
            version = parts[2]
            length = 0
            close = version == b"HTTP/1.0"
            upgrade = False
            key = b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                value = value.strip()
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        self._fail()
                        return
                elif name == b"connection":
                    low = value.lower()
                    if b"close" in low:
                        close = True
                    elif b"keep-alive" in low:
                        close = False
                elif name == b"upgrade":
                    upgrade = value.lower() == b"websocket"
                elif name == b"sec-websocket-key":
                    key = value
                elif name == b"transfer-encoding":
                    self._fail()  # no chunked request bodies here
                    return
            if len(buf) < end + 4 + length:
                return  # the body is still on its way
            del buf[: end + 4 + length]
            transport = self.transport
            if upgrade and key:
                if path.endswith(b"/nows"):
                    transport.write(self.replies.refused)
                    continue
                accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # RFC 6455
                transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                b"Sec-WebSocket-Accept: " + accept + b"\r\nX-Backend: " + self.replies.tag
                                + b"\r\n\r\n")
                self.ws = True
                self._frames()
                return
            transport.write(self.replies.large if path.endswith(b"/1m") else self.replies.small)
            if close:
                transport.close()
                return

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(self.replies.bad)
            self.transport.close()

    def _frames(self) -> None:
        buf = self.buf
        while self.transport is not None and not self.paused:
            if len(buf) < 2:
                return
            first, second = buf[0], buf[1]
            n = second & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            mask = b""
            if second & 0x80:
                mask = bytes(buf[pos : pos + 4])
                pos += 4
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if mask:
                payload = _unmask(mask, payload)
            opcode = first & 0x0F
            transport = self.transport
            if opcode == 0x8:  # close: answer it, then close
                transport.write(_frame(0x88, payload[:125]))
                transport.close()
                return
            if opcode == 0x9:  # ping → pong
                transport.write(_frame(0x8A, payload))
            elif opcode == 0xA:  # pong: nothing
                continue
            elif payload == ABORT:
                transport.abort()
                return
            else:
                transport.write(_frame(first, payload))


async def serve(name: str, host: str, port: int, port_file: Path | None) -> None:
    loop = asyncio.get_running_loop()
    replies = Replies(name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    server = await loop.create_server(lambda: Backend(replies), sock=sock, backlog=4096)
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(sock.getsockname()[1]))
        os.replace(tmp, port_file)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="A", help="value of the X-Backend header")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, default=None, help="write the bound port here once listening")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.name, args.host, args.port, args.port_file))


if __name__ == "__main__":
    main()
