"""Proxy nodes joining, dying and losing NATS: the full table on start, the last table while NATS is away."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from fleethub.shared.bus import Bus
from fleethub.shared.embedded import EmbeddedNats
from fleethub.shared.net import free_port
from fleethub.shared.settings import load_settings
from tests.integration.proxy.conftest import ProxyEnv, answers, get, port_of
from tests.integration.proxy.rawclient import RawClient
from tests.integration.proxy.rawclient import get as raw_get
from tests.support.cluster import Cluster, wait_for

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


async def test_killed_node_restarts_under_traffic_and_never_serves_a_wrong_target(env: ProxyEnv) -> None:
    backends = [await env.backend(f"u{i}") for i in range(4)]
    for i in range(ROUTES):
        await env.route(f"u{i}", backends[i % 4].url)
    proc, base = env.node()
    _, base2 = env.node()
    for b in (base, base2):
        await wait_for(lambda b=b: answers(f"{b}/user/u{ROUTES - 1}/", f"u{(ROUTES - 1) % 4}"), timeout=20,
                       interval=0.02, what="nodes")
    answered: dict[str, list[tuple[int, str]]] = {base: [], base2: []}
    refused = 0
    stop = asyncio.Event()

    async def traffic(b: str) -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            i += 1
            try:
                client = await RawClient.open(port_of(b))
                try:
                    await client.send(raw_get(f"/user/u{i % ROUTES}/x"))
                    r = await client.response(timeout=5)
                    answered[b].append((r.status, r.headers.get("x-backend", "") + f"/{i % ROUTES}"))
                finally:
                    await client.close()
            except (OSError, asyncio.IncompleteReadError):
                refused += 1  # the killed node is down: connections are refused, never answered wrongly
                await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(traffic(b)) for b in (base, base2)]
    try:
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await asyncio.sleep(0.3)
        env.node(port_of(base))
        await wait_for(lambda: asyncio.sleep(0, len(answered[base]) > 50 + refused), timeout=20, what="restarted node")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    for b, seen in answered.items():
        wrong = [(s, x) for s, x in seen if s != 200 or x.split("/")[0] != f"u{int(x.split('/')[1]) % 4}"]
        assert not wrong, (b, wrong[:5])
    assert refused > 0  # the kill was felt by the first node's clients (as refused connections only)
    print(f"\nkill + restart under traffic: {len(answered[base])} + {len(answered[base2])} answers, all right; "
          f"{refused} connections refused while the node was down")


async def test_a_node_joining_during_route_churn_ends_with_the_bucket_state(env: ProxyEnv) -> None:
    backends = [await env.backend(f"b{i}") for i in range(4)]
    n = 300
    state: dict[str, int | None] = {}
    for i in range(n):
        await env.route(f"c{i}", backends[i % 4].url)
        state[f"c{i}"] = i % 4
    stop = asyncio.Event()

    async def churn() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            user = f"c{(step * 7) % n}"
            if step % 5 == 0:
                await env.unroute(user)
                state[user] = None
            else:
                await env.route(user, backends[step % 4].url)
                state[user] = step % 4

    task = asyncio.create_task(churn())
    try:
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        _, base = env.node()

        async def healthy() -> bool:
            return (await get(f"{base}/_chp_healthz")).status_code == 200

        await wait_for(healthy, timeout=20, interval=0.01, what="joining node")
        joined = time.monotonic() - t0
        await asyncio.sleep(0.5)  # churn goes on after the join
    finally:
        stop.set()
        await task

    async def matches() -> list[str]:
        client = await RawClient.open(port_of(base))
        bad = []
        try:
            for user, backend in state.items():
                await client.send(raw_get(f"/user/{user}/"))
                r = await client.response()
                got = r.headers.get("x-backend") if r.status == 200 else None
                want = None if backend is None else f"b{backend}"
                if got != want or (backend is None and r.status != 302):
                    bad.append(f"{user}: {r.status} {got} != {want}")
        finally:
            await client.close()
        return bad

    await asyncio.sleep(0.2)
    assert await matches() == []
    print(f"\nnode joined during churn: serving {joined:.2f} s after exec, then identical to the bucket")
