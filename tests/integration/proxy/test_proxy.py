"""Proxy nodes as real processes: pushed routes, streaming, websockets, balancing, restarts."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.bus import Bus
from shared.events import RegistryEntry, Route
from shared.names import route_key
from shared.registry import registry_key
from shared.settings import ServiceSettings, load_settings
from tests.integration.proxy.backend import Backend
from tests.support.cluster import Cluster, free_port, wait_for

pytestmark = pytest.mark.integration


class Env:
    def __init__(self, settings: ServiceSettings, bus: Bus, cluster: Cluster) -> None:
        self.settings, self.bus, self.cluster = settings, bus, cluster
        self.backends: list[Backend] = []

    def node(self) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = self.cluster.start("proxy", proxy={"port": port})
        return proc, f"http://127.0.0.1:{port}"

    async def backend(self, name: str) -> Backend:
        b = await Backend(name).start()
        self.backends.append(b)
        return b

    async def route(self, user: str, target: str, server: str = "") -> None:
        kv = await self.bus.routes()
        spec = f"/user/{user}/" + (f"{server}/" if server else "")
        await kv.put(route_key(user, server), Route(routespec=spec, target=target,
                                                     data={"user": user, "server_name": server}).model_dump_json().encode())

    async def unroute(self, user: str, server: str = "") -> None:
        await (await self.bus.routes()).delete(route_key(user, server))

    async def replica(self, service: str, name: str, url: str) -> None:
        kv = await self.bus.registry()
        await kv.put(registry_key(service, name), RegistryEntry(service=service, replica=name, url=url).model_dump_json().encode())


@pytest.fixture
async def env(tmp_path: Path, nats_url: str, nats_namespace: str) -> AsyncIterator[Env]:
    settings = load_settings(None, nats_url=nats_url, nats_namespace=nats_namespace, proxy={"activity_interval": 0.3})
    bus = Bus(nats_url, nats_namespace, "test")
    await bus.connect()
    await bus.ensure_topology()
    logs = tmp_path / "logs"
    logs.mkdir()
    e = Env(settings, bus, Cluster(settings, logs))
    try:
        yield e
    finally:
        e.cluster.stop()
        for b in e.backends:
            await b.stop()
        await bus.close()


async def _get(url: str, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.get(url, follow_redirects=False, **kw)  # type: ignore[arg-type]


async def _answers(url: str, backend: str) -> bool:
    r = await _get(url)
    return r.status_code == 200 and r.json().get("backend") == backend


async def test_routes_are_pushed_and_longest_prefix_wins(env: Env) -> None:
    alice, gpu, alicex = await env.backend("alice"), await env.backend("alice-gpu"), await env.backend("alicex")
    await env.route("alice", alice.url)
    _, base = env.node()
    await wait_for(lambda: _answers(f"{base}/user/alice/x", "alice"), timeout=20, what="node up with alice's route")
    t0 = time.monotonic()
    await env.route("alice", gpu.url, "gpu")
    await wait_for(lambda: _answers(f"{base}/user/alice/gpu/api", "alice-gpu"), interval=0.002, what="pushed route")
    print(f"\nKV put → served by the node: {(time.monotonic() - t0) * 1000:.1f} ms")
    await env.route("alicex", alicex.url)
    await wait_for(lambda: _answers(f"{base}/user/alicex/", "alicex"), what="alicex")
    assert (await _get(f"{base}/user/alice/gpux")).json()["backend"] == "alice"
    r = await _get(f"{base}/user/alice/p?q=1", headers={"X-Forwarded-For": "6.6.6.6", "Host": "hub.example:8000"})
    body = r.json()
    assert body["path"] == "/user/alice/p?q=1"  # the prefix is kept, the query too
    h = body["headers"]
    assert h["host"] == "hub.example:8000" and h["x-forwarded-for"] == "127.0.0.1" and h["x-forwarded-host"] == "hub.example:8000"
    assert h["x-forwarded-proto"] == "http"

    await env.unroute("alice")

    async def redirected() -> bool:
        r = await _get(f"{base}/user/alice/lab?x=1")
        return r.status_code == 302 and r.headers["location"] == "/hub/user/alice/lab?x=1"

    await wait_for(redirected, what="deleted route → hub redirect")
    assert (await _get(f"{base}/")).headers["location"] == "/hub/"


async def test_streaming_keepalive_and_websocket(env: Env) -> None:
    b = await env.backend("big")
    await env.route("big", b.url)
    proc, base = env.node()
    await wait_for(lambda: _answers(f"{base}/user/big/", "big"), timeout=20, what="node up")
    size = 100 * 1024 * 1024

    def rss_kb() -> int:
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1])

    baseline = rss_kb()
    async with httpx.AsyncClient(timeout=60) as c:
        got = 0
        async with c.stream("GET", f"{base}/user/big/download?n={size}") as r:
            async for chunk in r.aiter_raw():
                got += len(chunk)
        assert got == size

        async def upload() -> AsyncIterator[bytes]:
            block = b"y" * (1024 * 1024)
            for _ in range(100):
                yield block

        r = await c.post(f"{base}/user/big/upload", content=upload())
        assert r.json()["received"] == size
        grown = rss_kb() - baseline
        print(f"\nproxy RSS {baseline / 1024:.0f} MB before, +{grown / 1024:.1f} MB after 100 MB down + 100 MB up")
        assert grown < 32 * 1024, "bodies must stream, not sit in memory"

        before = b.connections
        for _ in range(50):
            assert (await c.get(f"{base}/user/big/k")).status_code == 200
        assert b.connections - before <= 2, "upstream connections are pooled"

    # websocket: after the 101, bytes flow both ways through the proxy
    reader, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
    writer.write(b"GET /user/big/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    for i in range(100):
        msg = f"frame-{i}".encode()
        writer.write(msg)
        await writer.drain()
        assert await reader.readexactly(len(msg)) == msg
    writer.close()


async def test_hub_traffic_is_balanced_over_live_replicas(env: Env) -> None:
    api1, api2, auth = await env.backend("api1"), await env.backend("api2"), await env.backend("auth")
    _, base = env.node()
    await wait_for(lambda: _status(f"{base}/hub/api/", 503), timeout=20, what="node up, no replicas: 503")
    r = await _get(f"{base}/hub/api/")
    assert r.json()["status"] == 503
    await env.replica("api", "a1", api1.url)
    await env.replica("api", "a2", api2.url)
    await env.replica("auth", "x1", auth.url)

    async def both() -> bool:
        seen = {(await _get(f"{base}/hub/api/users")).json()["backend"] for _ in range(6)}
        return seen == {"api1", "api2"}

    await wait_for(both, what="both api replicas used")
    assert (await _get(f"{base}/hub/login")).json()["backend"] == "auth"
    assert (await _get(f"{base}/hub/api/oauth2/authorize")).json()["backend"] == "auth"
    await (await env.bus.registry()).delete(registry_key("api", "a1"))

    async def only_api2() -> bool:
        seen = {(await _get(f"{base}/hub/home")).json()["backend"] for _ in range(6)}
        return seen == {"api2"}

    await wait_for(only_api2, what="deleted replica dropped")
    # a replica that stops answering is dropped and the request retried on another
    await env.replica("api", "a1", api1.url)
    await wait_for(both, what="api1 back")
    await api1.stop()
    for _ in range(6):
        assert (await _get(f"{base}/hub/home")).json()["backend"] == "api2"


async def test_nodes_serve_the_full_table_on_start_and_after_a_kill(env: Env) -> None:
    backends = [await env.backend(f"u{i}") for i in range(20)]
    for i, b in enumerate(backends):
        await env.route(f"u{i}", b.url)
    proc, base = env.node()
    await wait_for(lambda: _answers(f"{base}/user/u19/", "u19"), timeout=20, what="first node")
    for i in range(20):
        assert (await _get(f"{base}/user/u{i}/")).json()["backend"] == f"u{i}"
    _, base2 = env.node()  # a second node joins later and gets the same table
    await wait_for(lambda: _answers(f"{base2}/user/u0/", "u0"), timeout=20, what="second node")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (await _get(f"{base2}/user/u5/")).json()["backend"] == "u5"  # unaffected
    port = int(base.rsplit(":", 1)[1])
    env.cluster.start("proxy", proxy={"port": port})
    t0 = time.monotonic()
    await wait_for(lambda: _answers(f"{base}/user/u7/", "u7"), timeout=20, interval=0.01, what="restarted node")
    print(f"\nrestarted node serving its full table {time.monotonic() - t0:.2f}s after exec")
    # an upstream that is gone → 503, not a hang
    await backends[3].stop()
    r = await _get(f"{base}/user/u3/")
    assert r.status_code == 503 and r.json()["status"] == 503


async def _status(url: str, status: int) -> bool:
    return (await _get(url)).status_code == status
