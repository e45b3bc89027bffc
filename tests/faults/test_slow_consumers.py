"""F20: slow consumers lose nothing without noticing.

A proxy node stopped (SIGSTOP, 10 s) while 5,000 route updates go by: once it runs again its table equals
the route bucket (a missed update is detected and resynced, never served stale for good), and its memory
stays bounded. The api's activity recorder stopped while proxies publish activity batches: once it runs
again every batch is recorded (durable consumer; the newest time wins).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fleethub.shared.bus import Bus
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import User
from fleethub.shared.events import ActivityReported, Route, RouteActivity
from fleethub.shared.names import route_key
from fleethub.shared.net import free_port
from tests.support.cluster import Cluster, ensure_user, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

KEYS = 500
ROUNDS = 10  # KEYS * ROUNDS = 5,000 updates
PAUSE = 10.0  # seconds the consumer is stopped: the scenario's length
TOKEN = "slow-consumer-route-api-token"


def family(pid: int) -> list[int]:
    """`pid` and all its descendants (a proxy node is a supervisor and its workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def rss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


@pytest.fixture
async def stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, start=(),
                             proxy={"port": free_port(), "api_port": free_port(), "auth_token": TOKEN}) as cluster:
        yield cluster


def user_route(i: int, port: int) -> tuple[str, Route]:
    user = f"slow{i}"
    return route_key(user), Route(routespec=f"/user/{user}/", target=f"http://127.0.0.1:{port}",
                                  data={"user": user, "server_name": ""})


async def served(api: httpx.AsyncClient) -> dict[str, str]:
    """The proxy node's table of user routes: path → target, from its route API."""
    table = (await api.get("/api/routes")).json()
    return {path: entry["target"] for path, entry in table.items() if path.startswith("/user/slow")}


async def test_a_stopped_route_watcher_catches_up_with_5000_updates(stack: Cluster) -> None:
    s = stack.settings
    proc = stack.start("proxy")
    bus = Bus(s.nats_url, s.nats_namespace, "test-slow")
    await bus.connect()
    try:
        await bus.ensure_topology()
        for i in range(KEYS):
            await bus.routes.put(*user_route(i, 20000))
        url = f"http://127.0.0.1:{s.proxy.api_port}"
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"token {TOKEN}"}, timeout=30) as api:
            await wait_for(lambda: _has(api, KEYS), timeout=60, interval=0.2, what=f"the first table\n{stack.logs()}")
            pids = family(proc.pid)
            before = rss_kib(pids)
            signal_all(pids, signal.SIGSTOP)
            started = time.monotonic()
            try:
                for r in range(1, ROUNDS + 1):
                    await asyncio.gather(*(bus.routes.put(*user_route(i, 20000 + r)) for i in range(KEYS)))
                for i in range(0, KEYS, 5):  # and a fifth of them go
                    await bus.routes.delete(user_route(i, 0)[0])
                await asyncio.sleep(max(0.0, PAUSE - (time.monotonic() - started)))
            finally:
                signal_all(pids, signal.SIGCONT)
            want = {r.routespec.rstrip("/"): r.target for k, r in (await bus.routes.snapshot()).items()
                    if k.startswith("user.slow")}
            assert len(want) == KEYS - KEYS // 5

            async def caught_up() -> bool:
                return await served(api) == want

            await wait_for(caught_up, timeout=120, interval=0.5, what=f"the node's table equal to KV\n{stack.logs()}")
            after = rss_kib(family(proc.pid))
            print(f"\nproxy RSS {before} KiB before the pause, {after} KiB after catching up")
            assert after < before + 256 * 1024  # bounded: no backlog kept around
            assert proc.poll() is None
    finally:
        await bus.close()


async def _has(api: httpx.AsyncClient, n: int) -> bool:
    return len(await served(api)) == n


async def test_a_stopped_activity_recorder_records_every_batch_eventually(stack: Cluster) -> None:
    s = stack.settings
    await ensure_user(s, "walker")
    proc = stack.start("api")
    bus = Bus(s.nats_url, s.nats_namespace, "test-activity")
    await bus.connect()
    engine = make_engine(s.require_database_url(), pool_size=1)
    try:
        await bus.ensure_topology()

        async def bound() -> bool:
            names = {c.name for c in await bus.js.consumers_info(bus.names.evt_stream)}
            return "api-activity" in names

        await wait_for(bound, timeout=60, what=f"the api-activity consumer\n{stack.logs()}")
        pids = family(proc.pid)
        signal_all(pids, signal.SIGSTOP)
        base = datetime(2026, 3, 1, tzinfo=UTC)
        newest = base
        try:
            for n in range(300):
                newest = base + timedelta(seconds=n)
                batch = [RouteActivity(key=route_key("walker"), last_activity=newest, requests=1)]
                await bus.publish(ActivityReported(node=f"node{n % 3}", routes=batch))
        finally:
            signal_all(pids, signal.SIGCONT)

        async def recorded() -> bool:
            async with make_sessionmaker(engine)() as session:
                seen = (await session.execute(select(User.last_activity).where(User.name == "walker"))).scalar()
                return seen == newest

        await wait_for(recorded, timeout=60, interval=0.2, what=f"the newest activity recorded\n{stack.logs()}")
        await wait_for(lambda: _settled(bus), timeout=30, what="every batch acknowledged")
        assert proc.poll() is None
    finally:
        await bus.close()
        await engine.dispose()


async def _settled(bus: Bus) -> bool:
    info = await bus.js.consumer_info(bus.names.evt_stream, "api-activity")
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)
