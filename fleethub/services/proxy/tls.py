"""TLS on the public port (`proxy.ssl_cert` / `proxy.ssl_key`) and the plain-HTTP port that redirects to it."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import cast
from urllib.parse import quote_from_bytes, urlsplit

import httptools

from fleethub.shared.errors import ConfigError

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # a client that opens a connection and never finishes its handshake is dropped
REDIRECT_TIMEOUT = 10.0  # the redirect port answers one request per connection, within this long
_SAFE = b"/?&=%:@!$'()*+,;-._~[]"  # kept as they are in a redirected target; anything else is percent-encoded


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The public port's TLS context: TLS 1.2+, HTTP/1.1 by ALPN (websockets included).

    Raises:
        ConfigError: the files can not be read or do not match.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"proxy.ssl_cert / proxy.ssl_key ({cert}, {key}) can not be loaded: {exc}") from None
    return ctx


def https_origin(public_url: str) -> bytes:
    """`https://host[:port]` of the public URL: where the redirect port sends every request."""
    parts = urlsplit(public_url)
    return f"https://{parts.netloc}".encode("ascii")


def redirect_response(method: bytes, target: bytes, origin: bytes) -> bytes:
    """301 (GET/HEAD) or 308 (others: the method and body are kept) to the same path and query at `origin`.

    The Location is built from the configured origin, never from the request's Host.
    """
    if not target.startswith(b"/") or target.startswith(b"//"):
        target = b"/"  # absolute-form, asterisk-form or a protocol-relative look-alike: the front page
    location = origin + quote_from_bytes(target, safe=_SAFE).encode("ascii")
    status = b"301 Moved Permanently" if method in (b"GET", b"HEAD") else b"308 Permanent Redirect"
    return (b"HTTP/1.1 " + status + b"\r\nLocation: " + location
            + b"\r\nContent-Length: 0\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")


class RedirectConnection(asyncio.Protocol):
    """One connection to the redirect port: the first request head is answered with a redirect, then closed."""

    def __init__(self, origin: bytes) -> None:
        self.origin = origin
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.target = b""
        self.size = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(REDIRECT_TIMEOUT, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        self.size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # answered at the end of its head, like any other request
        except httptools.HttpParserError:
            self._answer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        if self.size > 64 * 1024:
            self._answer(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_headers_complete(self) -> None:
        self._answer(redirect_response(self.parser.get_method(), self.target, self.origin))

    def _answer(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
