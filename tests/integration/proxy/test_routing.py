"""Routes pushed through the KV bucket: longest prefix, headers, redirects to the hub, errors, activity."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from fleethub.shared.names import route_key
from fleethub.shared.net import free_port
from tests.integration.proxy.conftest import ProxyEnv, answers, get, port_of
from tests.integration.proxy.rawclient import RawClient
from tests.integration.proxy.rawclient import get as raw_get
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


async def test_routes_are_pushed_and_matched_by_longest_prefix(env: ProxyEnv) -> None:
    alice, gpu, alicex = await env.backend("alice"), await env.backend("alice-gpu"), await env.backend("alicex")
    await env.route("alice", alice.url)
    _, base = env.node()
    await wait_for(lambda: answers(f"{base}/user/alice/x", "alice"), timeout=20, what="node with alice's route")

    # put → served, polled on one keep-alive connection (a new client per poll would dominate the time)
    client = await RawClient.open(port_of(base))
    t0 = time.monotonic()
    await env.route("alice", gpu.url, "gpu")
    polls = 0
    while True:
        await client.send(raw_get("/user/alice/gpu/api"))
        polls += 1
        if (await client.response()).headers.get("x-backend") == "alice-gpu":
            break
        assert time.monotonic() - t0 < 5, "route not pushed within 5 s"
    print(f"\nKV put → served by the node: {(time.monotonic() - t0) * 1000:.1f} ms ({polls} polls)")
    await client.close()

    # /user/alicex/ is not under /user/alice/: before its own route exists it goes to the hub
    r = await get(f"{base}/user/alicex/tree?a=1")
    assert r.status_code == 302 and r.headers["location"] == "/hub/user/alicex/tree?a=1"
    await env.route("alicex", alicex.url)
    await wait_for(lambda: answers(f"{base}/user/alicex/", "alicex"), what="alicex's route")
    for path, backend in [("/user/alice", "alice"), ("/user/alice/", "alice"), ("/user/alice/gpux", "alice"),
                          ("/user/alice/gpu", "alice-gpu"), ("/user/alice/gpu/x/y", "alice-gpu"),
                          ("/user/alicex/lab", "alicex")]:
        r = await get(base + path)
        assert r.headers["x-backend"] == backend, path
        assert r.json()["path"] == path  # the prefix is kept when forwarding


async def test_host_kept_forwarded_headers_set_and_hop_by_hop_removed(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    await env.route("alice", alice.url)
    _, base = env.node()
    await wait_for(lambda: answers(f"{base}/user/alice/", "alice"), timeout=20, what="node")
    r = await get(f"{base}/user/alice/p?q=1&r=%2F", headers={
        "Host": "hub.example:8443", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "1", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6",
        "Connection": "keep-alive, X-Secret", "X-Secret": "hop", "Keep-Alive": "timeout=5", "X-Custom": "kept",
    })
    seen = r.json()
    assert seen["path"] == "/user/alice/p?q=1&r=%2F"
    h = seen["headers"]
    assert h["host"] == "hub.example:8443"
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == "hub.example:8443"
    assert h["x-forwarded-port"] == str(port_of(base))
    assert h["x-custom"] == "kept"
    for gone in ("forwarded", "x-real-ip", "x-secret", "keep-alive"):
        assert gone not in h, gone
    # each forwarded header exactly once: the spoofed ones were replaced, not appended to
    names = [k.lower() for k, _ in alice.seen[-1].raw_headers]
    assert names.count("x-forwarded-for") == 1 and names.count("x-forwarded-host") == 1


async def test_deleted_route_and_unknown_users_redirect_to_the_hub(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    await env.route("alice", alice.url)
    _, base = env.node()
    await wait_for(lambda: answers(f"{base}/user/alice/x", "alice"), timeout=20, what="node")
    await env.unroute("alice")

    async def redirected() -> bool:
        r = await get(f"{base}/user/alice/x")
        return r.status_code == 302 and r.headers["location"] == "/hub/user/alice/x"

    await wait_for(redirected, what="deleted route → 302 to the hub")
    r = await get(f"{base}/user/nobody/lab/tree?token=abc&x=%20")
    assert r.status_code == 302 and r.headers["location"] == "/hub/user/nobody/lab/tree?token=abc&x=%20"
    r = await get(f"{base}/")
    assert r.status_code == 302 and r.headers["location"] == "/hub/"
    client = await RawClient.open(port_of(base))
    await client.send(b"GET /user/alice/%2e%2e/bob/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.response()).status == 400
    await client.close()


async def test_upstream_down_is_503_and_slow_upstream_504(env: ProxyEnv) -> None:
    dead_port = free_port()
    slow = await env.backend("slow")
    await env.route("gone", f"http://127.0.0.1:{dead_port}")
    await env.route("slow", slow.url)
    _, base = env.node()
    await wait_for(lambda: answers(f"{base}/user/slow/", "slow"), timeout=20, what="node")

    r = await get(f"{base}/user/gone/api/contents")
    assert r.status_code == 503
    assert r.json()["status"] == 503 and r.json()["message"]
    r = await get(f"{base}/user/gone/lab", headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html") and "<html>" in r.text
    r = await get(f"{base}/user/gone/lab", headers={"Accept": "application/json"})
    assert r.status_code == 503 and r.json()["status"] == 503

    t0 = time.monotonic()
    r = await get(f"{base}/user/slow/api/x?sleep=5")  # proxy.upstream_timeout is 2 s in these tests
    assert r.status_code == 504 and r.json()["status"] == 504
    assert 1.5 < time.monotonic() - t0 < 4.5


async def test_activity_is_published_in_batches(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    await env.route("alice", alice.url)
    sub, batches = await env.watch_activity()
    try:
        _, base = env.node()
        await wait_for(lambda: answers(f"{base}/user/alice/", "alice"), timeout=20, what="node")
        before = datetime.now(UTC)
        for _ in range(5):
            assert (await get(f"{base}/user/alice/api/kernels")).status_code == 200
        await get(f"{base}/user/nobody/")  # unrouted: no activity

        def counted() -> int:
            return sum(r.requests for b in batches for r in b.routes if r.key == route_key("alice")
                       and r.last_activity >= before)

        async def all_counted() -> bool:
            return counted() >= 5

        await wait_for(all_counted, timeout=5, what="activity batch")
        keys = {r.key for b in batches for r in b.routes}
        assert keys == {route_key("alice")}
        assert all(b.node.startswith("proxy-") for b in batches)
        await asyncio.sleep(0.7)  # a batch already under way may still land
        n = len(batches)
        await asyncio.sleep(1.0)
        assert len(batches) == n, "nothing happened: no batch"
    finally:
        await sub.unsubscribe()


async def test_forwarded_headers_of_a_trusted_hop_are_kept_and_extended(env: ProxyEnv) -> None:
    alice = await env.backend("alice")
    await env.route("alice", alice.url)
    _, base = env.node(trusted_proxies=["127.0.0.0/8"])
    await wait_for(lambda: answers(f"{base}/user/alice/", "alice"), timeout=20, what="node")
    r = await get(f"{base}/user/alice/p", headers={
        "Host": "hub.example", "X-Forwarded-For": "203.0.113.9, 10.0.0.2", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "hub.example.org", "X-Forwarded-Port": "443",
    })
    h = r.json()["headers"]
    assert h["x-forwarded-for"] == "203.0.113.9, 10.0.0.2, 127.0.0.1"
    assert h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-host"] == "hub.example.org"
    assert h["x-forwarded-port"] == "443"
    names = [k.lower() for k, _ in alice.seen[-1].raw_headers]
    assert names.count("x-forwarded-for") == 1 and names.count("x-forwarded-proto") == 1
    # a trusted hop that says nothing gets the connection's own values
    h = (await get(f"{base}/user/alice/q", headers={"Host": "hub.example"})).json()["headers"]
    assert (h["x-forwarded-for"], h["x-forwarded-proto"], h["x-forwarded-host"]) == ("127.0.0.1", "http", "hub.example")
    assert h["x-forwarded-port"] == str(port_of(base))



async def test_a_browser_gets_the_hub_error_page_for_a_server_that_is_down(env: ProxyEnv) -> None:
    api = await env.backend("api")
    await env.replica("api", "a1", api.url)
    await env.route("alice", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    _, base = env.node()
    await wait_for(lambda: _status(f"{base}/hub/api/", 200), timeout=20, what="node")

    async def routed() -> bool:
        await env.replica("api", "a1", api.url)  # refreshed like a live replica's key (it expires otherwise)
        r = await get(f"{base}/user/alice/lab?x=1", headers={"Accept": "text/html"})
        return r.headers.get("x-backend") == "api"

    await wait_for(routed, timeout=10, what="alice's route")
    seen = api.seen[-1]
    assert seen.method == "GET" and seen.target == "/hub/error/503?url=/user/alice/lab%3Fx%3D1"
    # API clients and non-GET requests get the proxy's own JSON 503
    r = await get(f"{base}/user/alice/api/status")
    assert r.status_code == 503 and r.json()["status"] == 503
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.post(f"{base}/user/alice/lab", content=b"x", headers={"Accept": "text/html"})
    assert r.status_code == 503 and api.seen[-1] is seen


async def _status(url: str, status: int) -> bool:
    return (await get(url)).status_code == status
