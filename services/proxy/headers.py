"""Header rewriting between client and upstream: hop-by-hop removal and X-Forwarded-* from the socket.

Headers stay as the raw `(name, value)` byte pairs the parser produced; names are compared
lower-cased. Nothing a client says about its own address, scheme or host chain is believed.
"""

from __future__ import annotations

Header = tuple[bytes, bytes]

# RFC 9110 §7.6.1 connection-specific fields, plus the de-facto ones
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
     b"proxy-authenticate", b"proxy-authorization"}
)
# set by us from the connection; anything a client sends under these names is dropped
UNTRUSTED = frozenset({b"forwarded", b"x-real-ip"})
UNTRUSTED_PREFIX = b"x-forwarded-"


def tokens(headers: list[Header], name: bytes) -> set[bytes]:
    """The lower-cased comma-separated tokens of every `name` header."""
    out: set[bytes] = set()
    for k, v in headers:
        if k.lower() == name:
            out.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return out


def get(headers: list[Header], name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case)."""
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _end_to_end(headers: list[Header], *, request: bool) -> list[bytes]:
    named = tokens(headers, b"connection")  # fields the sender declared hop-by-hop
    out: list[bytes] = []
    for k, v in headers:
        low = k.lower()
        if low in HOP_BY_HOP or low in named:
            continue
        if request and (low in UNTRUSTED or low.startswith(UNTRUSTED_PREFIX)):
            continue
        out.append(k + b": " + v + b"\r\n")
    return out


def request_head(
    method: bytes,
    target: bytes,
    headers: list[Header],
    *,
    client_ip: str,
    port: int,
    host: bytes | None,
    chunked: bool,
    upgrade: bytes | None,
) -> bytes:
    """The request head sent upstream.

    `Host` and the path (prefix included) are kept as received; X-Forwarded-For/-Proto/-Host/-Port
    are set from the client connection. A chunked body is re-framed by us, hence the explicit
    Transfer-Encoding; `upgrade` (e.g. b"websocket") keeps the Upgrade handshake.
    """
    lines = [method + b" " + target + b" HTTP/1.1\r\n", *_end_to_end(headers, request=True)]
    lines.append(b"X-Forwarded-For: " + client_ip.encode("latin-1") + b"\r\nX-Forwarded-Proto: http\r\n")
    if host is not None:
        lines.append(b"X-Forwarded-Host: " + host + b"\r\n")
    lines.append(b"X-Forwarded-Port: %d\r\n" % port)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        lines.append(b"Connection: Upgrade\r\nUpgrade: " + upgrade + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def response_head(
    status: int,
    reason: bytes,
    headers: list[Header],
    *,
    chunked: bool,
    close: bool,
    upgrade: bytes | None = None,
) -> bytes:
    """The response head sent to the client: end-to-end headers plus our own framing and Connection."""
    lines = [b"HTTP/1.1 %d " % status + reason + b"\r\n", *_end_to_end(headers, request=False)]
    if upgrade is not None:
        lines.append(b"Connection: Upgrade\r\nUpgrade: " + upgrade + b"\r\n")
    else:
        if chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if close:
            lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def has_dot_segment(path: str) -> bool:
    """Whether `path` has a `.` or `..` segment, literally or percent-encoded.

    Such a path would be routed on one prefix and could be resolved by the upstream to another;
    the proxy refuses it rather than guess which normalisation the upstream applies.
    """
    if "." not in path and "%2" not in path:
        return False
    for segment in path.split("/"):
        if segment and len(segment) <= 6 and segment.lower().replace("%2e", ".") in (".", ".."):
            return True
    return False
