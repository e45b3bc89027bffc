"""F11 and F17: NATS restarts (same store directory) and duplicate commands.

F11: a 2 s NATS outage during a storm of 30 spawns through the API, with two spawner workers: every
spawn ends ready, none fails, no request is answered 5xx, each server has exactly one process; afterwards
the durable consumers and the proxy's route watch are what they were before. On main, `put_route` was
tried once and its timeout failed the spawn.

F17: the same spawn envelope re-published within the dedup window, again after a NATS restart (acked
work-queue messages are gone, so JetStream accepts it again), and the same spawn id under another
`Nats-Msg-Id`: one effect each time (the handler is idempotent by spawn id).

Each test runs a NATS server of its own on a fixed port, so that it can be restarted on that port.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from fleethub.services.spawner.routes import delete_route, put_route
from fleethub.shared.bus import Bus, BusTimeout
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.embedded import EmbeddedNats
from fleethub.shared.events import Route, SpawnServer, new_id, subject_of, wrap
from fleethub.shared.names import route_key
from fleethub.shared.net import free_port
from fleethub.shared.settings import ServiceSettings
from tests.support.cluster import FAKE_SERVER, Cluster, mint_token, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

STORM = 30
OUTAGE = 2.0  # seconds NATS is down: the scenario's length, not a wait for an outcome


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def restart(server: EmbeddedNats) -> None:
    """Stop the server, leave it down for `OUTAGE` seconds, start it again on the same port and store."""
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(OUTAGE)
    await asyncio.to_thread(server.start)


def server_processes(user: str) -> list[int]:
    """Pids of user servers (the fake single-user server) of `user`."""
    marker = f"JUPYTERHUB_USER={user}\x00".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker in env and b"JUPYTERHUB_SERVICE_PREFIX=" in env:
            pids.append(int(proc.name))
    return pids


async def statuses(settings: ServiceSettings) -> dict[str, str]:
    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.execute(select(ServerState.user_name, ServerState.status))
            return {user: status for user, status in rows.all()}
    finally:
        await engine.dispose()


async def add_users(settings: ServiceSettings, names: list[str], admin: str) -> None:
    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            rows = [{"name": n, "admin": False} for n in names] + [{"name": admin, "admin": True}]
            await session.execute(insert(User).values(rows).on_conflict_do_nothing())
    finally:
        await engine.dispose()


async def counts(bus: Bus) -> tuple[int, int, int]:
    """Consumers on the command stream, the event stream and the routes stream."""
    names = bus.names
    return (len(await bus.js.consumers_info(names.cmd_stream)), len(await bus.js.consumers_info(names.evt_stream)),
            len(await bus.js.consumers_info(f"KV_{names.routes_bucket}")))


@pytest.fixture
async def stormy(tmp_path: Path, own_nats: EmbeddedNats, database_url: str,
                 nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, own_nats.url, database_url, nats_namespace, start=("auth", "api", "spawner", "spawner", "proxy"),
        auth={"admin_users": ["admin"]}, api={"slow_spawn_timeout": 3, "port": free_port()},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 5, "http_timeout": 30},
        proxy={"port": free_port()},
    ) as cluster:
        yield cluster


async def test_a_2s_nats_outage_during_a_spawn_storm_fails_nothing(stormy: Cluster, own_nats: EmbeddedNats) -> None:
    s = stormy.settings
    tag = secrets.token_hex(3)
    users = [f"storm{tag}-{i}" for i in range(STORM)]
    await add_users(s, users, "admin")
    token = mint_token(s, "admin")
    bus = Bus(own_nats.url, s.nats_namespace, "test-observer")
    await bus.connect()
    try:
        await bus.ensure_topology()
        base = f"http://127.0.0.1:{s.api.port}"
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"token {token}"}, timeout=120) as api:
            await wait_for(lambda: _ok(api), timeout=60, what=f"the api\n{stormy.logs()}")
            await wait_for(lambda: _all_bound(bus), timeout=60, what=f"consumers and the route watch\n{stormy.logs()}")
            before = await counts(bus)

            posts = [asyncio.create_task(api.post(f"/hub/api/users/{u}/server")) for u in users]
            # the outage begins while spawns are in flight
            await wait_for(lambda: _some_claimed(s, 3), timeout=60, what="spawns in flight")
            await restart(own_nats)
            answers = await asyncio.gather(*posts)

            assert [r.status_code for r in answers if r.status_code >= 500] == [], \
                [r.text for r in answers if r.status_code >= 500]
            assert all(r.status_code in (201, 202) for r in answers), [(r.status_code, r.text) for r in answers]

            async def all_running() -> bool:
                st = await statuses(s)
                assert not [u for u in users if st.get(u) == "failed"], f"failed spawns: {st}\n{stormy.logs()}"
                return all(st.get(u) == "running" for u in users)

            await wait_for(all_running, timeout=120, interval=0.5, what=f"every spawn running\n{stormy.logs()}")
            for u in users:
                model = (await api.get(f"/hub/api/users/{u}")).json()
                assert model["servers"][""]["ready"] is True, model
            assert {u: len(server_processes(u)) for u in users} == {u: 1 for u in users}
            # reconnected, the consumers and watches are what they were (durables kept, watches re-made)
            await wait_for(lambda: _counts_are(bus, before), timeout=60, interval=0.5,
                           what=f"consumer counts back to {before}")
    finally:
        await bus.close()


async def _ok(api: httpx.AsyncClient) -> bool:
    return (await api.get("/hub/api/")).status_code == 200


async def _all_bound(bus: Bus) -> bool:
    cmd, evt, watches = await counts(bus)
    return cmd == 1 and evt >= 2 and watches >= 1


async def _counts_are(bus: Bus, want: tuple[int, int, int]) -> bool:
    return await counts(bus) == want


async def _some_claimed(settings: ServiceSettings, n: int) -> bool:
    return len(await statuses(settings)) >= n


@pytest.fixture
async def workers(tmp_path: Path, own_nats: EmbeddedNats, database_url: str,
                  nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, own_nats.url, database_url, nats_namespace, start=("spawner", "spawner"),
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 5, "http_timeout": 30},
    ) as cluster:
        yield cluster


async def test_duplicate_spawn_commands_have_one_effect(workers: Cluster, own_nats: EmbeddedNats) -> None:
    """F17: a re-published envelope (deduplicated), the same spawn under another message id, and the same
    envelope again after a NATS restart (no longer deduplicated) each leave one server process."""
    s = workers.settings
    engine = make_engine(s.require_database_url(), pool_size=1)
    bus = Bus(own_nats.url, s.nats_namespace, "test-dup")
    await bus.connect()
    user = f"dup{secrets.token_hex(3)}"
    try:
        await bus.ensure_topology()
        cmd = SpawnServer(user=user, spawn_id=new_id())
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.execute(insert(User).values(name=user))
            uid = (await session.execute(select(User.id).where(User.name == user))).scalar_one()
            await session.execute(insert(Server).values(user_id=uid, name="", desired="running",
                                                        spawn_id=cmd.spawn_id))
        envelope = wrap(cmd)
        subject, body = subject_of(cmd, s.nats_namespace), envelope.model_dump_json().encode()
        for _ in range(3):  # within the dedup window: stored once
            await bus.publish_raw(subject, body, envelope.id)
        await bus.publish(cmd)  # the same spawn id under a new message id: stored, and acked as done
        await wait_for(lambda: _status_is(s, user, "running"), timeout=60, what=f"running\n{workers.logs()}")
        await wait_for(lambda: _drained(bus), timeout=60, what=f"both commands handled\n{workers.logs()}")
        stored = (await bus.js.stream_info(bus.names.cmd_stream)).state.last_seq
        assert stored == 2  # the three publishes of one envelope were stored once
        pids = server_processes(user)
        assert len(pids) == 1

        await restart(own_nats)
        await bus.publish_raw(subject, body, envelope.id, attempts=30)  # accepted again: acked messages are gone
        await bus.publish(cmd)
        assert (await bus.js.stream_info(bus.names.cmd_stream)).state.last_seq == stored + 2
        await wait_for(lambda: _drained(bus), timeout=60, what=f"the duplicates handled\n{workers.logs()}")
        assert server_processes(user) == pids
        assert (await statuses(s))[user] == "running"
        async with make_sessionmaker(engine)() as session:
            rows = await session.scalar(select(func.count()).select_from(ServerState).where(
                ServerState.user_name == user, ServerState.spawn_id == cmd.spawn_id))
        assert rows == 1
    finally:
        await bus.close()
        await engine.dispose()


async def _drained(bus: Bus) -> bool:
    """Whether the spawner consumer has taken and settled everything the command stream holds."""
    last = (await bus.js.stream_info(bus.names.cmd_stream)).state.last_seq
    info = await bus.js.consumer_info(bus.names.cmd_stream, "spawner-local")
    return bool(info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= last)


async def _status_is(settings: ServiceSettings, user: str, status: str) -> bool:
    return (await statuses(settings)).get(user) == status


async def test_route_writes_outlast_an_outage_longer_than_a_request(own_nats: EmbeddedNats,
                                                                   nats_namespace: str) -> None:
    """F11's cause: one route write during an outage longer than a request's timeout fails (as `put_route`
    did on main, failing the spawn); the spawner's `put_route`/`delete_route` retry until NATS is back."""
    bus = Bus(own_nats.url, nats_namespace, "test-route-retry")
    await bus.connect()
    try:
        await bus.ensure_topology()
        route = Route(routespec="/user/rita/", target="http://127.0.0.1:9", data={"user": "rita", "server_name": ""})
        await asyncio.to_thread(own_nats.stop)
        retried = asyncio.create_task(put_route(bus, route))
        with pytest.raises(BusTimeout):  # a single try gives up after the request timeout (5 s)
            await bus.routes.put(route_key("rita"), route)
        assert not retried.done()
        await asyncio.to_thread(own_nats.start)
        await asyncio.wait_for(retried, 40)
        assert await bus.routes.get(route_key("rita")) == route
        await asyncio.to_thread(own_nats.stop)
        deleted = asyncio.create_task(delete_route(bus, "rita", ""))
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(own_nats.start)
        await asyncio.wait_for(deleted, 40)
        assert await bus.routes.get(route_key("rita")) is None
    finally:
        await bus.close()
