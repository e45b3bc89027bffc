"""The client and upstream protocols driven by hand over in-memory transports: ordering and framing."""

from __future__ import annotations

from typing import Any

from fleethub.services.proxy.node import Node
from fleethub.services.proxy.server import ClientConnection
from fleethub.services.proxy.table import RouteTable
from fleethub.services.proxy.upstream import Pool, UpstreamConnection
from fleethub.shared.events import Route


class FakeTransport:
    """Records what is written; knows whether it was closed and whether reading is paused."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def take(self) -> bytes:
        out, self.data = bytes(self.data), bytearray()
        return out

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.1.2.3", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True


def proxy() -> tuple[ClientConnection, FakeTransport, UpstreamConnection, FakeTransport]:
    """A client connection and one idle pooled upstream connection for the route /user/alice/."""
    pool = Pool(connect_timeout=1)
    node = Node(port=8000, upstream_timeout=30, pool=pool)
    node.table = RouteTable()
    node.table.put("user.alice._", Route(routespec="/user/alice/", target="http://127.0.0.1:9"))
    up = UpstreamConnection(pool, ("127.0.0.1", 9))
    up_t = FakeTransport()
    up.connection_made(up_t)  # type: ignore[arg-type]
    pool.release(up)
    client = ClientConnection(node)
    client_t = FakeTransport()
    client.connection_made(client_t)  # type: ignore[arg-type]
    return client, client_t, up, up_t


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


async def test_pipelined_requests_are_answered_in_order() -> None:
    client, client_t, up, up_t = proxy()
    client.data_received(b"GET /user/alice/1 HTTP/1.1\r\nHost: h\r\n\r\n"
                         b"GET /user/bob/ HTTP/1.1\r\nHost: h\r\n\r\n"
                         b"GET /user/alice/3 HTTP/1.1\r\nHost: h\r\n\r\n")
    sent = up_t.take()
    assert sent.startswith(b"GET /user/alice/1 HTTP/1.1\r\n") and b"/user/alice/3" not in sent
    assert b"X-Forwarded-For: 10.1.2.3\r\n" in sent
    assert not client_t.reading, "reading pauses while requests wait"
    assert client_t.take() == b""  # nothing before the first response
    up.data_received(ok(b"one"))
    out = client_t.take()
    first, _, second = out.partition(b"one")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert second == b"HTTP/1.1 302 Found\r\nLocation: /hub/user/bob/\r\nContent-Length: 0\r\n\r\n"
    assert up_t.take().startswith(b"GET /user/alice/3 HTTP/1.1\r\n")  # the same pooled connection
    up.data_received(ok(b"three"))
    assert client_t.take().endswith(b"three") and client_t.reading and not client_t.closed


async def test_chunked_bodies_are_reframed_and_trailers_dropped() -> None:
    client, client_t, up, up_t = proxy()
    client.data_received(b"POST /user/alice/up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3;ext=1\r\nabc\r\n")
    client.data_received(b"2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    sent = up_t.take()
    head, _, body = sent.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    # the upstream answers chunked with a trailer, in pieces: the client gets canonical chunks
    up.data_received(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n4\r\nwxyz\r\n")
    up.data_received(b"0\r\nX-Late: 1\r\n\r\n")
    out = client_t.take()
    assert out == (b"HTTP/1.1 201 Created\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"4\r\nwxyz\r\n0\r\n\r\n")


async def test_close_delimited_response_is_chunked_for_the_client() -> None:
    client, client_t, up, up_t = proxy()
    client.data_received(b"GET /user/alice/x HTTP/1.1\r\nHost: h\r\n\r\n")
    up_t.take()
    up.data_received(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ")
    up.data_received(b"world")
    up.connection_lost(None)  # the end of the connection is the end of the body
    assert client_t.take() == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")
    assert not client_t.closed and client.exchange is None  # the client connection lives on


async def test_garbage_after_a_good_request_is_answered_in_turn() -> None:
    client, client_t, up, _ = proxy()
    client.data_received(b"GET /user/alice/x HTTP/1.1\r\nHost: h\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    assert client_t.take() == b""
    up.data_received(ok(b"fine"))
    out = client_t.take()
    assert out.startswith(b"HTTP/1.1 200 OK") and b"fine" in out
    assert b"HTTP/1.1 400 Bad Request" in out and client_t.closed


async def test_response_before_the_request_body_ends_closes_both() -> None:
    client, client_t, up, up_t = proxy()
    client.data_received(b"PUT /user/alice/f HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\npart")
    assert up_t.take().endswith(b"\r\n\r\npart")
    up.data_received(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert client_t.take() == b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert client_t.closed and up_t.closed  # neither connection is in a known state any more


async def test_an_endless_response_head_is_cut_off() -> None:
    client, client_t, up, up_t = proxy()
    client.data_received(b"GET /user/alice/x HTTP/1.1\r\nHost: h\r\n\r\n")
    up.data_received(b"HTTP/1.1 200 OK\r\n")
    for _ in range(40):  # a user server is free to misbehave: 320 kB of headers and counting
        up.data_received(b"X-Junk: " + b"j" * 8000 + b"\r\n")
    assert client_t.take().startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert client_t.closed and up_t.closed
