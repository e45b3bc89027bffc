"""Route reconciliation can not resurrect a deleted route, leaves busy servers' routes to their worker, and
leaves no consumer behind on the routes stream.

On main a route came back 0.2 s after a stop deleted it: the reconciler wrote from a read of PostgreSQL
taken before the stop. Here the race is driven step by step with the reconciliation's own parts (read
KV with revisions, read PostgreSQL, write conditionally), against real NATS and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleethub.shared import routes as reconciliation
from fleethub.shared.bus import Bus
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import ServerState
from fleethub.shared.events import Route, new_id
from fleethub.shared.lifecycle import ServerStatus
from fleethub.shared.names import route_key
from fleethub.shared.routes import reconcile, reconcile_round, route_for, wanted_routes
from tests.support.cluster import migrated

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TARGET = "http://127.0.0.1:9"


@dataclass
class World:
    bus: Bus
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def row(self, user: str, status: ServerStatus, spawn_id: str) -> Route:
        """`user`'s server_states row in `status`; returns the route a running server has."""
        values: dict[str, Any] = {"user_name": user, "server_name": "", "spawn_id": spawn_id, "status": status,
                                  "state": {}, "target": TARGET if status == ServerStatus.RUNNING else None}
        async with self.sessions() as session, session.begin():
            await session.execute(insert(ServerState).values(**values).on_conflict_do_update(
                index_elements=["user_name", "server_name"], set_=values))
        return route_for(user, "", TARGET, spawn_id)

    async def set_status(self, user: str, status: ServerStatus) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(update(ServerState).where(ServerState.user_name == user).values(status=status))

    async def round(self) -> tuple[int, int]:
        result = await reconcile_round(self.engine, self.sessions, self.bus, ())
        assert result is not None
        return result

    async def route(self, user: str) -> Route | None:
        return await self.bus.routes.get(route_key(user))

    async def route_consumers(self) -> int:
        return len(await self.bus.js.consumers_info(f"KV_{self.bus.names.routes_bucket}"))


@pytest.fixture
async def world(nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[World]:
    await migrated(database_url)
    bus = Bus(nats_url, nats_namespace, "test-reconcile")
    await bus.connect()
    engine = make_engine(database_url, pool_size=2)
    try:
        await bus.ensure_topology()
        yield World(bus, engine, make_sessionmaker(engine))
    finally:
        await bus.close()
        await engine.dispose()


async def test_a_route_deleted_after_the_kv_read_is_never_put_back(world: World) -> None:
    """The race of the issue: the reconciler has read, then a stop deletes the route; PostgreSQL still says
    running when it is read (a worker that saw the process exit deletes the route before it records it)."""
    route = await world.row("alice", ServerStatus.RUNNING, new_id())
    await world.bus.routes.put(route_key("alice"), route)
    await world.bus.routes.put(route_key("bob"), route_for("bob", "", TARGET, new_id()))  # stale: bob has no row
    seen = await world.bus.routes.versions()  # 1. the reconciler reads KV
    await world.bus.routes.delete(route_key("alice"))  # 2. the stop deletes the route
    async with world.sessions() as session:  # 3. the reconciler reads PostgreSQL: alice still running
        wanted = await wanted_routes(session, ())
    assert route_key("alice") in wanted.routes
    await world.bus.routes.put(route_key("bob"), route_for("bob", "", TARGET, new_id()))  # bob changes meanwhile
    put, deleted = await reconcile(world.bus, seen, wanted)  # 4. it writes
    assert (put, deleted) == (0, 0)
    assert await world.route("alice") is None, "a deleted route was resurrected"
    assert await world.route("bob") is not None, "a route put after the read was deleted from the older view"
    await world.set_status("alice", ServerStatus.STOPPED)  # 5. the stop records the end
    assert await world.round() == (0, 1)  # bob's stale route goes; alice's stays deleted
    assert await world.route("alice") is None and await world.route("bob") is None


async def test_a_route_deleted_moments_ago_is_left_deleted_then_repaired(world: World,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Read after the delete, PostgreSQL still says running: the deleter records the end next, so a fresh
    delete marker is respected; a route still missing after `RESURRECT_GRACE` is put back (repair)."""
    route = await world.row("carol", ServerStatus.RUNNING, new_id())
    await world.bus.routes.put(route_key("carol"), route)
    await world.bus.routes.delete(route_key("carol"))
    assert await world.round() == (0, 0)
    assert await world.route("carol") is None
    monkeypatch.setattr(reconciliation, "RESURRECT_GRACE", 0.0)  # as if the grace had passed
    assert await world.round() == (1, 0)
    assert await world.route("carol") == route


async def test_routes_of_busy_servers_are_left_to_their_worker(world: World) -> None:
    """A pending server's route (put before it is recorded ready) and a stopping one's (deleted by its
    stop) are neither deleted nor put by a round; a missing route of a running server is put."""
    pending = await world.row("dora", ServerStatus.PENDING, new_id())
    await world.bus.routes.put(route_key("dora"), route_for("dora", "", TARGET, pending.spawn_id or ""))
    stopping_spawn = new_id()
    await world.row("erin", ServerStatus.STOPPING, stopping_spawn)
    await world.bus.routes.put(route_key("erin"), route_for("erin", "", TARGET, stopping_spawn))
    running = await world.row("fred", ServerStatus.RUNNING, new_id())
    assert await world.round() == (1, 0)
    assert await world.route("dora") is not None and await world.route("erin") is not None
    assert await world.route("fred") == running


async def test_listings_leave_no_consumer_on_the_routes_stream(world: World) -> None:
    """Each round lists the bucket through one watch whose consumer it deletes: the count stays flat."""
    for i in range(5):
        await world.row(f"user{i}", ServerStatus.RUNNING, new_id())
    baseline = await world.route_consumers()
    counts = []
    for _ in range(40):
        await world.round()
        await world.bus.routes.keys()
        await world.bus.routes.snapshot()
        counts.append(await world.route_consumers())
    assert max(counts) == baseline, counts
    # nats-py's own listing leaves its consumer behind: the count the test watches does see a leak
    kv = await world.bus.topology.kv(world.bus.names.routes_bucket)
    await kv.keys()
    assert await world.route_consumers() == baseline + 1
