"""Route lookup and header handling of the proxy."""

from __future__ import annotations

import asyncio

import pytest

from services.proxy.httpio import BadMessage, Head, body_framing, forward_headers, read_head
from services.proxy.table import RouteTable
from shared.events import Route


def table(*specs: str) -> RouteTable:
    t = RouteTable()
    for i, spec in enumerate(specs):
        t.put(f"k{i}", Route(routespec=spec, target=f"http://127.0.0.1:{9000 + i}"))
    return t


def test_longest_prefix_whole_segments() -> None:
    t = table("/user/alice/", "/user/alice/gpu/", "/user/bob/")
    assert t.lookup("/user/alice/lab").port == 9000  # type: ignore[union-attr]
    assert t.lookup("/user/alice").port == 9000  # type: ignore[union-attr]
    assert t.lookup("/user/alice/gpu/api").port == 9001  # type: ignore[union-attr]
    assert t.lookup("/user/alice/gpux/api").port == 9000  # type: ignore[union-attr]
    assert t.lookup("/user/alicex/lab") is None
    assert t.lookup("/user/") is None and t.lookup("/") is None
    t.delete("k1")
    assert t.lookup("/user/alice/gpu/api").port == 9000  # type: ignore[union-attr]
    t.put("k0", Route(routespec="/user/alice/", target="http://[::1]:7000"))
    hit = t.lookup("/user/alice/x")
    assert hit is not None and (hit.host, hit.port) == ("::1", 7000) and len(t) == 2


def test_lookup_cost_is_bounded_by_route_depth() -> None:
    t = table("/user/a/")
    assert t.lookup("/user/a/" + "x/" * 10_000) is not None  # only max_depth probes


def parse(raw: bytes) -> Head:
    async def go() -> Head:
        r = asyncio.StreamReader()
        r.feed_data(raw)
        r.feed_eof()
        head = await read_head(r)
        assert head is not None
        return head

    return asyncio.run(go())


def test_framing_rejects_smuggling() -> None:
    both = parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(BadMessage):
        body_framing(both, request=True)
    for bad in (b"Content-Length: 5\r\nContent-Length: 6", b"Content-Length: -1", b"Transfer-Encoding: gzip"):
        with pytest.raises(BadMessage):
            body_framing(parse(b"POST / HTTP/1.1\r\n" + bad + b"\r\n\r\n"), request=True)
    with pytest.raises(BadMessage):
        parse(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n")
    assert body_framing(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), request=True) == ("none", 0)
    assert body_framing(parse(b"HTTP/1.1 200 OK\r\n\r\n"), request=False) == ("close", 0)
    assert body_framing(parse(b"HTTP/1.1 304 OK\r\nContent-Length: 9\r\n\r\n"), request=False, status=304) == ("none", 0)


def test_hop_by_hop_and_forwarded_headers_are_dropped() -> None:
    head = parse(
        b"GET / HTTP/1.1\r\nHost: hub\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nUpgrade: websocket\r\nAccept: */*\r\n\r\n"
    )
    names = {k.lower() for k, _ in forward_headers(head, keep_upgrade=False)}
    assert names == {"host", "accept"}
    assert "upgrade" in {k.lower() for k, _ in forward_headers(head, keep_upgrade=True)}
