"""Proxy nodes joining, dying and losing NATS: the full table on start, the last table while NATS is away."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from shared.bus import Bus
from shared.embedded import EmbeddedNats
from shared.settings import load_settings
from tests.integration.proxy.conftest import ProxyEnv, answers, get, port_of
from tests.integration.proxy.rawclient import RawClient
from tests.integration.proxy.rawclient import get as raw_get
from tests.support.cluster import Cluster, free_port, wait_for

pytestmark = pytest.mark.integration

ROUTES = 40


async def _serves_all(base: str, n: int = ROUTES) -> None:
    client = await RawClient.open(port_of(base))
    try:
        for i in range(n):
            await client.send(raw_get(f"/user/u{i}/x"))
            r = await client.response()
            assert r.status == 200 and r.headers["x-backend"] == f"u{i % 4}", (i, r.status, r.headers)
    finally:
        await client.close()


async def test_nodes_serve_the_full_table_on_start_and_after_a_kill(env: ProxyEnv) -> None:
    backends = [await env.backend(f"u{i}") for i in range(4)]
    for i in range(ROUTES):
        await env.route(f"u{i}", backends[i % 4].url)
    proc, base = env.node()
    await wait_for(lambda: answers(f"{base}/user/u{ROUTES - 1}/", f"u{(ROUTES - 1) % 4}"), timeout=20,
                   interval=0.02, what="first node")
    await _serves_all(base)  # the whole table at once: never a partial one

    _, base2 = env.node()  # a node joining later gets the same table
    await wait_for(lambda: answers(f"{base2}/user/u0/", "u0"), timeout=20, interval=0.02, what="second node")
    await _serves_all(base2)

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    await _serves_all(base2)  # the other node is unaffected
    t0 = time.monotonic()
    env.node(port_of(base))
    await wait_for(lambda: answers(f"{base}/user/u7/", "u3"), timeout=20, interval=0.01, what="restarted node")
    print(f"\nkilled node restarted and serving its full table {time.monotonic() - t0:.2f} s after exec")
    await _serves_all(base)


async def test_node_keeps_its_table_while_nats_is_away_and_resyncs(tmp_path: Path, nats_namespace: str) -> None:
    # our own NATS server, so it can be stopped and started again on the same port
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())  # the same port after a restart
    nats.start()
    settings = load_settings(None, nats_url=nats.url, nats_namespace=nats_namespace, proxy={"upstream_timeout": 2.0})
    (tmp_path / "logs").mkdir()
    cluster = Cluster(settings, tmp_path / "logs")
    env = ProxyEnv(settings, Bus(nats.url, nats_namespace, "proxy-test"), cluster)
    try:
        await env.bus.connect()
        await env.bus.ensure_topology()
        a, b = await env.backend("a"), await env.backend("b")
        await env.route("alice", a.url)
        await env.route("bob", b.url)
        _, base = env.node()
        await wait_for(lambda: answers(f"{base}/user/bob/", "b"), timeout=20, what="node")
        await env.bus.close()

        nats.stop()
        await asyncio.sleep(0.5)
        for path, backend in (("/user/alice/", "a"), ("/user/bob/", "b")):  # the last table is still served
            assert (await get(base + path)).headers["x-backend"] == backend

        nats.start()
        env.bus = Bus(nats.url, nats_namespace, "proxy-test-2")
        await env.bus.connect()
        await env.route("alice", b.url)  # changed and deleted after the outage: picked up
        await env.unroute("bob")

        async def caught_up() -> bool:
            moved = (await get(f"{base}/user/alice/")).headers.get("x-backend") == "b"
            gone = (await get(f"{base}/user/bob/")).status_code == 302
            return moved and gone

        await wait_for(caught_up, timeout=15, what=f"node in step after NATS came back\n{cluster.logs()}")
        assert "resync" in cluster.logs()
    finally:
        cluster.stop()
        for upstream in env.backends:
            await upstream.stop()
        await env.bus.close()
        nats.stop()
