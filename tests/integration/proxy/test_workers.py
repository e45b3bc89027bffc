"""A proxy node of several worker processes on one port, as real processes against real NATS."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from fleethub.shared.names import route_key
from fleethub.shared.net import free_port, reserved_free_port
from fleethub.shared.procs import pid_alive
from tests.integration.proxy.conftest import ProxyEnv, answers, port_of
from tests.integration.proxy.rawclient import RawClient
from tests.integration.proxy.rawclient import get as raw_get
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def fresh_get(port: int, path: str) -> tuple[int, str]:
    """One request on a new connection (the kernel picks the worker per connection)."""
    client = await RawClient.open(port)
    try:
        await client.send(raw_get(path))
        r = await client.response(timeout=5)
        return r.status, r.headers.get("x-backend", "")
    finally:
        await client.close()


async def test_workers_share_the_port_and_each_applies_route_changes(env: ProxyEnv) -> None:
    a, b = await env.backend("a"), await env.backend("b")
    await env.route("alice", a.url)
    sub, batches = await env.watch_activity()
    proc, base = env.node(workers=2)
    port = port_of(base)
    try:
        await wait_for(lambda: answers(f"{base}/user/alice/", "a"), timeout=20, interval=0.02,
                       what=f"node\n{env.cluster.logs()}")
        await wait_for(lambda: asyncio.sleep(0, len(children(proc.pid)) == 2), timeout=10, what="two workers")
        # both workers serve connections (each publishes its own activity batches); a worker listens
        # only once it holds the table, so the second may take a moment to join
        async def both_served() -> bool:
            results = [await fresh_get(port, "/user/alice/x") for _ in range(20)]
            assert results == [(200, "a")] * 20
            reporters = {b.node for b in batches if any(r.key == route_key("alice") for r in b.routes)}
            return len(reporters) == 2

        await wait_for(both_served, timeout=10, interval=0.3, what=f"2 reporters\n{env.cluster.logs()}")

        t0 = time.monotonic()
        await env.route("alice", b.url)

        async def everywhere() -> bool:
            answers_now = [await fresh_get(port, "/user/alice/") for _ in range(16)]
            return all(x == (200, "b") for x in answers_now)

        await wait_for(everywhere, timeout=5, interval=0.001, what="the change on every worker")
        took = 1000 * (time.monotonic() - t0)
        print(f"\nroute change served by every worker of the node {took:.1f} ms after the put")
    finally:
        await sub.unsubscribe()


async def test_a_killed_worker_is_replaced_while_the_other_serves(env: ProxyEnv) -> None:
    a = await env.backend("a")
    await env.route("alice", a.url)
    proc, base = env.node(workers=2)
    port = port_of(base)
    await wait_for(lambda: answers(f"{base}/user/alice/", "a"), timeout=20, interval=0.02, what="node")
    await wait_for(lambda: asyncio.sleep(0, len(children(proc.pid)) == 2), timeout=10, what="two workers")
    first, second = children(proc.pid)

    failures = 0
    ok = 0
    stop = asyncio.Event()

    async def traffic() -> None:
        nonlocal failures, ok
        while not stop.is_set():
            try:
                status, backend = await fresh_get(port, "/user/alice/")
                if (status, backend) == (200, "a"):
                    ok += 1
                else:
                    failures += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                failures += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(0.3)
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        await wait_for(lambda: asyncio.sleep(0, len(set(children(proc.pid)) - {first, second}) == 1),
                       timeout=10, what="a replacement worker")
        replaced = time.monotonic() - t0
        await asyncio.sleep(1.5)  # the replacement loads the table and listens
        stop.set()
        await task
        assert ok > 100
        # only connections queued on the killed worker at the instant it died can fail
        assert failures <= 5, failures
        print(f"\nworker killed: replacement started {replaced:.2f} s later; {ok} requests ok, {failures} failed")
        stop.clear()
        results = [await fresh_get(port, "/user/alice/") for _ in range(40)]
        assert results == [(200, "a")] * 40
    finally:
        stop.set()
        await task

    supervisor = proc.pid
    workers = children(supervisor)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert not any(pid_alive(w) for w in workers)


async def test_workers_stop_when_their_supervisor_dies(env: ProxyEnv) -> None:
    proc, _ = env.node(workers=2)
    await wait_for(lambda: asyncio.sleep(0, len(children(proc.pid)) == 2), timeout=20, what="two workers")
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    async def all_gone() -> bool:
        return not any(pid_alive(w) for w in workers)

    await wait_for(all_gone, timeout=10, what="orphaned workers to stop")


def _two_free_ports() -> int:
    """A port P with P + 1 free too (a node of two workers listens on both), below the ephemeral range."""
    import socket

    for _ in range(50):
        port = reserved_free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two adjacent free ports")


async def test_each_worker_has_its_own_operations_port(env: ProxyEnv) -> None:
    a = await env.backend("a")
    await env.route("alice", a.url)
    ops = _two_free_ports()
    proc = env.cluster.start("proxy", proxy={"port": free_port(), "workers": 2}, ops={"proxy": {"port": ops}})
    nodes = set()
    async with httpx.AsyncClient(timeout=10) as client:
        for port in (ops, ops + 1):  # worker i listens on the configured port + i

            async def ready(p: int = port) -> bool:
                r = await client.get(f"http://127.0.0.1:{p}/health/ready")
                return r.status_code == 200 and r.json()["checks"] == {"bus": "ok", "route_table": "ok"}

            await wait_for(ready, timeout=30, what=f"worker on ops port {port}\n{env.cluster.logs()}")
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            nodes |= set(re.findall(r'fleethub_proxy_requests_total\{node="([^"]+)"\}', text))
    assert len(nodes) == 2, nodes  # two whole nodes, each counting its own requests
    assert len(children(proc.pid)) == 2
