"""Bodies stream through the proxy both ways with bounded memory; keep-alive and pipelining on both sides."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.proxy.backend import Backend
from tests.integration.proxy.conftest import ProxyEnv, answers, port_of, rss_kb
from tests.integration.proxy.rawclient import RawClient, get
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration

MB = 1024 * 1024
SIZE = 50 * MB


async def _node_with(env: ProxyEnv, name: str) -> tuple[Backend, int, str]:
    b = await env.backend(name)
    await env.route(name, b.url)
    proc, base = env.node()
    await wait_for(lambda: answers(f"{base}/user/{name}/", name), timeout=20, what="node")
    return b, proc.pid, base


async def test_large_bodies_stream_both_ways_in_bounded_memory(env: ProxyEnv) -> None:
    b, pid, base = await _node_with(env, "big")
    baseline = peak = rss_kb(pid)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kb(pid))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as c:
        got = 0
        async with c.stream("GET", f"{base}/user/big/download?n={SIZE}") as r:
            assert r.headers["transfer-encoding"] == "chunked"
            async for chunk in r.aiter_bytes():
                got += len(chunk)
        assert got == SIZE
        t_down = time.monotonic() - t0

        async def upload() -> AsyncIterator[bytes]:
            block = b"y" * MB
            for _ in range(SIZE // MB):
                yield block

        t1 = time.monotonic()
        r = await c.post(f"{base}/user/big/upload", content=upload())  # chunked: no length given
        assert r.json()["received"] == SIZE
        assert b.seen[-1].headers["transfer-encoding"] == "chunked"
        t_up = time.monotonic() - t1
        r = await c.post(f"{base}/user/big/upload", content=b"z" * (5 * MB))  # Content-Length
        assert r.json()["received"] == 5 * MB and b.seen[-1].headers["content-length"] == str(5 * MB)
        r = await c.get(f"{base}/user/big/download?n={5 * MB}&cl=1")
        assert r.headers["content-length"] == str(5 * MB) and len(r.content) == 5 * MB
    sampler.cancel()
    grown = (peak - baseline) / 1024
    print(f"\n50 MB down {SIZE / MB / t_down:.0f} MB/s, up {SIZE / MB / t_up:.0f} MB/s; "
          f"proxy RSS {baseline / 1024:.0f} MB, peak +{grown:.1f} MB")
    assert grown < 16, "bodies must stream, not sit in the proxy's memory"


async def test_backpressure_holds_memory_when_a_side_stops_reading(env: ProxyEnv) -> None:
    _, pid, base = await _node_with(env, "stall")
    baseline = rss_kb(pid)
    # the client stops reading a 50 MB download: the proxy must stop reading the upstream
    client = await RawClient.open(port_of(base))
    await client.send(get(f"/user/stall/download?n={SIZE}"))
    await asyncio.sleep(1.5)
    stalled_down = rss_kb(pid) - baseline
    got = 0
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert b"200 OK" in head
    while got < SIZE:  # chunk framing adds a little: count until the payload must be complete
        data = await client.reader.read(1 << 20)
        assert data
        got += len(data)
    await client.close()
    # the upstream stops reading a 50 MB upload for 1.5 s: the proxy must stop reading the client
    async with httpx.AsyncClient(timeout=30) as c:
        async def upload() -> AsyncIterator[bytes]:
            for _ in range(SIZE // MB):
                yield b"u" * MB

        task = asyncio.create_task(c.post(f"{base}/user/stall/upload?stall=1.5", content=upload()))
        await asyncio.sleep(1.2)
        stalled_up = rss_kb(pid) - baseline
        r = await task
        assert r.json()["received"] == SIZE
    print(f"\nproxy RSS growth with a stalled reader: download +{stalled_down / 1024:.1f} MB, "
          f"upload +{stalled_up / 1024:.1f} MB")
    assert stalled_down < 8 * 1024 and stalled_up < 8 * 1024


async def test_keepalive_pipelining_and_pooled_upstreams(env: ProxyEnv) -> None:
    b, _, base = await _node_with(env, "ka")
    client = await RawClient.open(port_of(base))
    before = b.connections
    t0 = time.monotonic()
    for i in range(200):
        await client.send(get(f"/user/ka/n/{i}"))
        r = await client.response()
        assert r.status == 200 and r.headers.get("connection") != "close"
        assert r.body.endswith(b"}") and f"/user/ka/n/{i}".encode() in r.body
    per_request = (time.monotonic() - t0) / 200 * 1000
    # pipelined: 20 requests in one write, answers in order (a redirect and a HEAD among them)
    batch = b"".join(get(f"/user/ka/p/{i}") for i in range(10))
    batch += get("/user/nobody/") + b"HEAD /user/ka/h HTTP/1.1\r\nHost: x\r\n\r\n"
    batch += b"".join(get(f"/user/ka/q/{i}") for i in range(8))
    await client.send(batch)
    for i in range(10):
        assert f"/user/ka/p/{i}".encode() in (await client.response()).body
    assert (await client.response()).status == 302
    head = await client.response(head_request=True)
    assert head.status == 200 and int(head.headers["content-length"]) > 0
    for i in range(8):
        assert f"/user/ka/q/{i}".encode() in (await client.response()).body
    # framing variants on the same connection: 204, and a body the upstream ends by closing
    await client.send(get("/user/ka/nocontent"))
    assert (await client.response()).status == 204
    await client.send(get("/user/ka/eof?n=3000"))
    r = await client.response()
    assert r.headers["transfer-encoding"] == "chunked" and r.body == b"e" * 3000
    await client.send(get("/user/ka/after"))
    assert b"/user/ka/after" in (await client.response()).body
    await client.close()
    print(f"\n200 sequential requests on one connection: {per_request:.2f} ms each; "
          f"upstream connections opened: {b.connections - before}")
    assert b.connections - before <= 3, "upstream connections are pooled"


async def test_http10_and_connection_close_are_honoured(env: ProxyEnv) -> None:
    _, _, base = await _node_with(env, "old")
    client = await RawClient.open(port_of(base))
    await client.send(b"GET /user/old/x HTTP/1.0\r\n\r\n")
    r = await client.response()
    assert r.status == 200 and r.headers["connection"] == "close"
    assert await client.closed_by_peer()
    client = await RawClient.open(port_of(base))
    await client.send(get("/user/old/y", extra="Connection: close\r\n"))
    assert (await client.response()).status == 200
    assert await client.closed_by_peer()
    client = await RawClient.open(port_of(base))
    await client.send(b"GET /user/old/z HTTP/1.1\r\n\r\n")  # no Host
    assert (await client.response()).status == 400
    client = await RawClient.open(port_of(base))
    await client.send(b"POST /user/old/z HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert (await client.response()).status == 400  # ambiguous framing is refused, never forwarded
    assert await client.closed_by_peer()
