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
# what a Connection header can not make us drop: a message's target, credentials and framing ("Connection:
# Host" would strip Host before the upstream, "Connection: Content-Length" would let the body pass for the
# next request); these names in Connection are ignored, the fields are forwarded as end-to-end ones
END_TO_END = frozenset(
    {b"host", b"content-length", b"content-type", b"authorization", b"cookie", b"set-cookie", b"location",
     b"origin"}
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
    if named:
        named -= END_TO_END
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
    trusted: bool = False,
    proto: bytes = b"http",
) -> bytes:
    """The request head sent upstream.

    `Host` and the path (prefix included) are kept as received; X-Forwarded-For/-Proto/-Host/-Port
    are set from the client connection. When the client is a `trusted` hop (a load balancer or TLS
    terminator in front of us), what it says is kept: its X-Forwarded-For chain gets the client's
    address appended, and its Proto/Host/Port stand. A chunked body is re-framed by us, hence the
    explicit Transfer-Encoding; `upgrade` (e.g. b"websocket") keeps the Upgrade handshake. `proto` is
    the scheme of the client connection (https when the node terminates TLS).
    """
    lines = [method + b" " + target + b" HTTP/1.1\r\n", *_end_to_end(headers, request=True)]
    ip = client_ip.encode("latin-1")
    fwd_host, fwd_port = host, b"%d" % port
    if trusted:
        chain = [v.strip() for k, v in headers if k.lower() == b"x-forwarded-for" and v.strip()]
        ip = b", ".join([*chain, ip])
        proto = first(headers, b"x-forwarded-proto") or proto
        fwd_host = first(headers, b"x-forwarded-host") or fwd_host
        fwd_port = first(headers, b"x-forwarded-port") or fwd_port
    lines.append(b"X-Forwarded-For: " + ip + b"\r\nX-Forwarded-Proto: " + proto + b"\r\n")
    if fwd_host is not None:
        lines.append(b"X-Forwarded-Host: " + fwd_host + b"\r\n")
    lines.append(b"X-Forwarded-Port: " + fwd_port + b"\r\n")
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        lines.append(b"Connection: Upgrade\r\nUpgrade: " + upgrade + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def first(headers: list[Header], name: bytes) -> bytes | None:
    """The first comma-separated element of header `name` (the hop nearest the client), if non-empty."""
    value = get(headers, name)
    if value is None:
        return None
    return value.split(b",", 1)[0].strip() or None


def response_head(
    status: int,
    reason: bytes,
    headers: list[Header],
    *,
    chunked: bool,
    close: bool,
    upgrade: bytes | None = None,
    extra: bytes = b"",
) -> bytes:
    """The response head sent to the client: end-to-end headers, `extra` (whole header lines of our own),
    then our own framing and Connection."""
    lines = [b"HTTP/1.1 %d " % status + reason + b"\r\n", *_end_to_end(headers, request=False)]
    if extra:
        lines.append(extra)
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
