"""One request on a client connection, and the checks and routing done once its head is parsed."""

from __future__ import annotations

from collections.abc import Callable

from fleethub.services.proxy import headers
from fleethub.services.proxy.replicas import Replicas
from fleethub.services.proxy.routing import HEALTHY, Answer, Forward, route
from fleethub.services.proxy.table import RouteTable

MAX_HEAD = 64 * 1024  # request line + headers
WRONG_HOST = "The Host header does not name this hub"


class HeadTooLarge(Exception):
    """The request head passed `MAX_HEAD`."""


class Request:
    """A request from its head to the end of its response: head fields, framing, body held meanwhile."""

    __slots__ = (
        "body",
        "buffered",
        "chunked",
        "complete",
        "decision",
        "has_body",
        "head_size",
        "headers",
        "headers_done",
        "host",
        "http11",
        "keep_alive",
        "method",
        "path",
        "sent_body",
        "started",
        "target",
        "upgrade",
        "websocket",
    )

    def __init__(self, started: float) -> None:
        self.target = b""
        self.headers: list[headers.Header] = []
        self.head_size = 0
        self.headers_done = False
        self.method = b""
        self.path = ""
        self.host: bytes | None = None
        self.http11 = True
        self.keep_alive = False
        self.websocket = False
        self.upgrade = False
        self.chunked = False
        self.has_body = False
        self.complete = False  # the whole request (body included) was read
        self.sent_body = False  # body bytes went upstream (the request can not be retried)
        self.body: list[bytes] = []  # body bytes read before the upstream connection was there
        self.buffered = 0
        self.decision: Forward | Answer = Answer(400, "Bad request")
        self.started = started


def prepare(req: Request, method: bytes, version: str, *, upgrade: bool, table: RouteTable | None,
            replicas: Replicas, host_ok: Callable[[Request], bool] | None = None, base_url: str = "/") -> None:
    """Fill in what the head says about framing, check it, and route the request.

    The decision is kept on the request: a bad head gets an `Answer` (400/505) and closes the
    connection; a good one is routed by `routing.route`. `host_ok` (None: any Host) refuses a Host
    that does not name the hub with a 400, except for the node's own health check.
    """
    req.method = method
    req.http11 = version == "1.1"
    req.upgrade = upgrade
    req.path = req.target.partition(b"?")[0].decode("latin-1")
    hosts = 0
    length = None
    for name, value in req.headers:  # one pass over the head for what routing and framing need
        low = name.lower()
        if low == b"host":
            hosts += 1
            req.host = value
        elif low == b"content-length":
            length = value
        elif low == b"transfer-encoding":
            req.chunked = True  # the parser accepts only a final "chunked" coding
    req.has_body = req.chunked or (length is not None and length.strip() not in (b"", b"0"))
    if upgrade:
        req.keep_alive = False  # the parser is done with this connection after an upgrade request
        req.websocket = b"websocket" in headers.tokens(req.headers, b"upgrade")
    if version not in ("1.1", "1.0"):
        req.decision = Answer(505, "Only HTTP/1.0 and HTTP/1.1 are supported")
    elif method == b"CONNECT" or not req.target.startswith(b"/"):
        req.decision = Answer(400, "Only origin-form request targets (/path) are accepted")
    elif hosts > 1 or (req.http11 and not hosts):
        req.decision = Answer(400, "An HTTP/1.1 request needs exactly one Host header")
    elif headers.has_dot_segment(req.path):
        req.decision = Answer(400, "Paths with '.' or '..' segments are not accepted")
    else:
        decision = route(req.path, req.target, table, replicas, base_url)
        if host_ok is not None and decision is not HEALTHY and not host_ok(req):
            decision = Answer(400, WRONG_HOST)
        req.decision = decision
    if isinstance(req.decision, Answer) and req.decision.status in (400, 505):
        req.keep_alive = False
