"""Answers the proxy gives itself: redirects and small errors, JSON for API clients and HTML for browsers."""

from __future__ import annotations

import html
import json

from fleethub.services.proxy.headers import Header, get

REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    302: b"Found",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def wants_json(path: str, headers: list[Header]) -> bool:
    """JSON for `/api/` paths and for clients whose Accept names JSON before HTML (q-values ignored)."""
    if "/api/" in path:
        return True
    accept = (get(headers, b"accept") or b"").lower()
    j = accept.find(b"json")
    if j < 0:
        return False
    h = accept.find(b"text/html")
    return h < 0 or j < h


def error(status: int, message: str, *, as_json: bool, close: bool, retry_after: int | None = None) -> bytes:
    """A complete error response: `{"status", "message"}` JSON, or a minimal HTML page."""
    reason = REASONS.get(status, b"Error")
    if as_json:
        body = json.dumps({"status": status, "message": message}).encode()
        ctype = b"application/json"
    else:
        text = html.escape(message)
        body = (
            f"<!DOCTYPE html><html><head><title>{status} {reason.decode()}</title></head>"
            f"<body><h1>{status} {reason.decode()}</h1><p>{text}</p></body></html>\n"
        ).encode()
        ctype = b"text/html; charset=utf-8"
    extra = b"Retry-After: %d\r\n" % retry_after if retry_after is not None else b""
    return _compose(status, b"Content-Type: " + ctype + b"\r\n" + extra, body, close)


def redirect(location: bytes, *, close: bool) -> bytes:
    """A 302 to `location` (already a valid URL path: request targets can not hold CR or LF)."""
    return (
        b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n"
        + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    )


def json_body(status: int, body: bytes | None, *, close: bool) -> bytes:
    """A complete JSON response (the health check, the route API); `None`: no body at all."""
    if body is None:
        return _compose(status, b"", b"", close)
    return _compose(status, b"Content-Type: application/json\r\n", body, close)


def _compose(status: int, fields: bytes, body: bytes, close: bool) -> bytes:
    """Status line, `fields` (whole header lines), length, no caching, Connection, then the body."""
    return (
        b"HTTP/1.1 %d " % status + REASONS.get(status, b"Error") + b"\r\n" + fields
        + b"Content-Length: %d\r\nCache-Control: no-store\r\n" % len(body)
        + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body
    )
