"""Spawner workers as real processes against real NATS and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from fleethub.shared.bus import Bus
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.events import (
    Route,
    ServerFailed,
    ServerReady,
    ServerStopped,
    SpawnServer,
    StopServer,
    new_id,
    unwrap,
)
from fleethub.shared.names import route_key
from fleethub.shared.procs import become_subreaper, pid_alive
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.cluster import CANARIES, FAKE_SERVER, Cluster, migrated, outside_allow_list, wait_for

pytestmark = pytest.mark.integration


class Harness:
    def __init__(self, settings: ServiceSettings, bus: Bus, cluster: Cluster) -> None:
        self.settings = settings
        self.bus = bus
        self.cluster = cluster
        self.engine = make_engine(settings.require_database_url(), pool_size=2)
        self.sessions = make_sessionmaker(self.engine)

    async def spawn(self, cmd: SpawnServer) -> None:
        """Publish a spawn command after recording it as the desired spawn, as the api does."""
        await self.desire(cmd.user, cmd.server_name, cmd.spawn_id)
        await self.bus.publish(cmd)

    async def desire(self, user: str, server: str, spawn_id: str) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(insert(User).values(name=user).on_conflict_do_nothing(index_elements=["name"]))
            uid = (await s.execute(select(User.id).where(User.name == user))).scalar_one()
            await s.execute(insert(Server).values(user_id=uid, name=server, desired="running", spawn_id=spawn_id)
                            .on_conflict_do_update(index_elements=["user_id", "name"],
                                                   set_={"desired": "running", "spawn_id": spawn_id}))

    async def row(self, user: str, server: str = "") -> ServerState | None:
        async with self.sessions() as s:
            return (
                await s.execute(select(ServerState).where(ServerState.user_name == user,
                                                          ServerState.server_name == server))
            ).scalar()

    async def route(self, user: str, server: str = "") -> dict[str, Any] | None:
        route = await self.bus.routes.get(route_key(user, server))
        return route.model_dump(mode="json") if route is not None else None

    async def status(self, user: str, server: str = "") -> str | None:
        row = await self.row(user, server)
        return row.status if row else None

    async def events(self) -> list[Any]:
        js = self.bus.js
        info = await js.stream_info(self.bus.names.evt_stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(self.bus.names.evt_stream, seq)
            except Exception:
                continue
            out.append(unwrap(msg.data, "evt")[1])
        return out


@pytest.fixture
async def harness(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Harness]:
    become_subreaper()
    await migrated(database_url)
    settings = load_settings(
        None, nats_url=nats_url, database_url=database_url, nats_namespace=nats_namespace, data_dir=tmp_path / "data",
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 2, "http_timeout": 10,
                 "environment": {"FAKE_ENV_DUMP": str(tmp_path / "env-{user}.json")}},
    )
    bus = Bus(nats_url, nats_namespace, "test")
    await bus.connect()
    await bus.ensure_topology()
    logs = tmp_path / "logs"
    logs.mkdir()
    h = Harness(settings, bus, Cluster(settings, logs))
    try:
        yield h
    finally:
        h.cluster.stop()
        await bus.close()
        await h.engine.dispose()


def spawn_cmd(user: str, server: str = "") -> SpawnServer:
    return SpawnServer(user=user, server_name=server, spawn_id=new_id())


async def test_spawn_ready_route_event_and_stop(harness: Harness) -> None:
    harness.cluster.start("spawner")
    cmd = spawn_cmd("alice")
    t0 = time.monotonic()
    await harness.spawn(cmd)
    await wait_for(lambda: _is(harness.status("alice"), "running"), timeout=20, what="running")
    print(f"\ncommand → running: {time.monotonic() - t0:.3f}s")
    route = await harness.route("alice")
    assert route and route["routespec"] == "/user/alice/" and route["spawn_id"] == cmd.spawn_id
    import httpx

    async with httpx.AsyncClient() as c:
        r = await c.get(f"{route['target']}/user/alice/hello")
        assert r.json()["user"] == "alice"
    await wait_for(lambda: _has_event(harness, ServerReady, cmd.spawn_id), what="ServerReady event")
    row = await harness.row("alice")
    assert row is not None
    pid = row.state["pid"]

    # the same command again (a redelivery or a duplicate publish with a new id) starts nothing new
    await harness.spawn(cmd)
    await harness.spawn(cmd)
    await _sleep(1.0)
    row = await harness.row("alice")
    assert row is not None and row.state["pid"] == pid and row.status == "running"

    await harness.bus.publish(StopServer(user="alice", spawn_id=cmd.spawn_id))
    await wait_for(lambda: _is(harness.status("alice"), "stopped"), what="stopped")
    assert await harness.route("alice") is None
    await wait_for(lambda: _gone(pid), what="process gone")
    await wait_for(lambda: _has_event(harness, ServerStopped, cmd.spawn_id), what="ServerStopped event")


async def test_environment_follows_the_contract(harness: Harness, tmp_path: Path) -> None:
    harness.cluster.start("spawner")
    await harness.spawn(spawn_cmd("env.user", "gpu"))
    await wait_for(lambda: _is(harness.status("env.user", "gpu"), "running"), timeout=20, what="running")
    env = _read_json(tmp_path / "env-{user}.json")
    assert env["JUPYTERHUB_USER"] == "env.user" and env["JUPYTERHUB_SERVER_NAME"] == "gpu"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/env.user/gpu/"
    url = env["JUPYTERHUB_SERVICE_URL"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/user/env.user/gpu/")
    assert env["JUPYTERHUB_CLIENT_ID"] == "jupyterhub-user-env.user-gpu"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/user/env.user/gpu/oauth_callback"
    assert json.loads(env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]) == [
        "access:servers!server=env.user/gpu", "access:servers!user=env.user"]
    assert env["JUPYTERHUB_API_URL"] == harness.settings.hub_api_url
    assert env["JUPYTERHUB_ACTIVITY_URL"] == f"{harness.settings.hub_api_url}/users/env.user/activity"
    assert len(env["JUPYTERHUB_API_TOKEN"]) == 32 and env["JPY_API_TOKEN"] == env["JUPYTERHUB_API_TOKEN"]
    assert env["JUPYTERHUB_BASE_URL"] == "/"
    assert not [k for k in env if k.startswith("FLEETHUB_")], "FLEETHUB_* (with the DB password) leaked"


async def test_servers_inherit_only_the_allow_list(harness: Harness, tmp_path: Path) -> None:
    """Security review: servers inherited the worker's whole environment except FLEETHUB_*."""
    harness.cluster.start("spawner", extra_env=CANARIES,
                          spawner={"environment": {"FAKE_ENV_DUMP": str(tmp_path / "env-{user}.json"),
                                                   "TEAM": "{username}-team"}})
    await harness.spawn(spawn_cmd("canary"))
    await wait_for(lambda: _is(harness.status("canary"), "running"), timeout=20, what="running")
    env = _read_json(tmp_path / "env-{user}.json")
    assert outside_allow_list(env, harness.settings, {"FAKE_ENV_DUMP", "TEAM"}) == []
    assert not (set(CANARIES.values()) - {CANARIES["LANG"]}) & set(env.values())
    assert env["LANG"] == "C.UTF-8" and env["PATH"] == os.environ["PATH"]  # env_keep arrives
    assert env["TEAM"] == "canary-team" and env["JUPYTERHUB_USER"] == "canary"  # spawner.environment arrives
    assert not [k for k in env if k.startswith("FLEETHUB_")], "FLEETHUB_* (the hub's settings) leaked"


async def test_stop_before_spawn_is_a_tombstone(harness: Harness) -> None:
    harness.cluster.start("spawner")
    cmd = spawn_cmd("bob")
    await harness.bus.publish(StopServer(user="bob", spawn_id=cmd.spawn_id))
    await wait_for(lambda: _is(harness.status("bob"), "stopped"), what="tombstone")
    await harness.spawn(cmd)
    await _sleep(1.5)
    assert await harness.status("bob") == "stopped"
    assert await harness.route("bob") is None


async def test_stop_during_a_slow_start_leaves_nothing(harness: Harness, tmp_path: Path) -> None:
    harness.cluster.start("spawner", spawner={"environment": {"FAKE_START_DELAY": "2"}})
    cmd = spawn_cmd("carol")
    await harness.spawn(cmd)
    await wait_for(lambda: _row_has_pid(harness, "carol"), what="process started")
    row = await harness.row("carol")
    assert row is not None and row.status == "pending"
    pid = row.state["pid"]
    await harness.bus.publish(StopServer(user="carol", spawn_id=cmd.spawn_id))
    await wait_for(lambda: _is(harness.status("carol"), "stopped"), what="stopped")
    await wait_for(lambda: _gone(pid), what="process gone")
    await _sleep(2.5)  # past the moment the server would have answered
    assert await harness.route("carol") is None and await harness.status("carol") == "stopped"


async def test_exited_and_failing_servers(harness: Harness) -> None:
    harness.cluster.start("spawner", spawner={"environment": {"FAKE_EXIT_CODE": "3"}})
    bad = spawn_cmd("dave")
    await harness.spawn(bad)
    await wait_for(lambda: _is(harness.status("dave"), "failed"), timeout=20, what="failed")
    assert await harness.route("dave") is None
    await wait_for(lambda: _has_event(harness, ServerFailed, bad.spawn_id), what="ServerFailed event")


async def test_server_killed_behind_our_back(harness: Harness) -> None:
    harness.cluster.start("spawner")
    cmd = spawn_cmd("erin")
    await harness.spawn(cmd)
    await wait_for(lambda: _is(harness.status("erin"), "running"), timeout=20, what="running")
    row = await harness.row("erin")
    assert row is not None
    os.killpg(row.state["pid"], signal.SIGKILL)
    await wait_for(lambda: _is(harness.status("erin"), "stopped"), timeout=10, what="noticed exit")
    assert await harness.route("erin") is None
    await wait_for(lambda: _has_event(harness, ServerStopped, cmd.spawn_id), what="ServerStopped event")


async def test_dead_worker_servers_are_adopted(harness: Harness) -> None:
    first = harness.cluster.start("spawner")
    cmd = spawn_cmd("frank")
    await harness.spawn(cmd)
    await wait_for(lambda: _is(harness.status("frank"), "running"), timeout=20, what="running")
    row = await harness.row("frank")
    assert row is not None
    pid, owner = row.state["pid"], row.worker_id
    second = harness.cluster.start("spawner")
    await _sleep(1.0)
    first.send_signal(signal.SIGKILL)
    first.wait()
    t0 = time.monotonic()

    async def adopted() -> bool:
        r = await harness.row("frank")
        return r is not None and r.worker_id not in (None, owner) and r.status == "running"

    await wait_for(adopted, timeout=15, what="adoption")
    print(f"\nadopted {time.monotonic() - t0:.2f}s after the owner was killed (lease_ttl 2s)")
    assert pid_alive(pid)
    route = await harness.route("frank")
    assert route is not None
    import httpx

    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{route['target']}/user/frank/")).status_code == 200
    await harness.bus.publish(StopServer(user="frank", spawn_id=cmd.spawn_id))
    await wait_for(lambda: _is(harness.status("frank"), "stopped"), what="stopped by the adopter")
    await wait_for(lambda: _gone(pid), what="adopted process gone")
    assert second.poll() is None


async def test_routes_are_reconciled(harness: Harness) -> None:
    harness.cluster.start("spawner")
    await harness.spawn(spawn_cmd("gina"))
    await wait_for(lambda: _is(harness.status("gina"), "running"), timeout=20, what="running")
    await harness.bus.routes.delete(route_key("gina", ""))
    await harness.bus.routes.put(route_key("ghost", ""), Route(routespec="/user/ghost/", target="http://127.0.0.1:9",
                                                               data={"user": "ghost", "server_name": ""}))
    await wait_for(lambda: _not_none(harness.route("gina")), timeout=15, what="route restored")
    await wait_for(lambda: _none(harness.route("ghost")), timeout=15, what="stale route deleted")


async def test_reconciliation_keeps_the_route_of_a_spawn_in_flight(harness: Harness) -> None:
    """A worker puts a server's route before it records the server running: a reconciliation round in between
    (here: a pending row whose route exists) must not delete it, or the server the api is about to call ready
    is unreachable until the next round. A route of a server that is neither pending nor running goes."""
    from fleethub.shared.routes import reconcile_round

    async with harness.sessions() as s, s.begin():
        for user, status in (("ivy", "pending"), ("jack", "stopped")):
            s.add(ServerState(user_name=user, server_name="", spawn_id=new_id(), status=status, state={}))
    for user in ("ivy", "jack"):
        await harness.bus.routes.put(route_key(user, ""), Route(routespec=f"/user/{user}/",
                                                                target="http://127.0.0.1:9",
                                                                data={"user": user, "server_name": ""}))
    assert await reconcile_round(harness.engine, harness.sessions, harness.bus, [], wait=True) == (0, 1)
    assert await harness.route("ivy") is not None
    assert await harness.route("jack") is None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


async def _is(coro: Any, value: Any) -> bool:
    return (await coro) == value


async def _none(coro: Any) -> bool:
    return (await coro) is None


async def _not_none(coro: Any) -> bool:
    return (await coro) is not None


async def _gone(pid: int) -> bool:
    return not pid_alive(pid)


async def _row_has_pid(h: Harness, user: str) -> bool:
    row = await h.row(user)
    return row is not None and "pid" in (row.state or {})


async def _has_event(h: Harness, kind: type, spawn_id: str) -> bool:
    return any(isinstance(e, kind) and e.spawn_id == spawn_id for e in await h.events())


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def test_a_superseded_spawn_starts_nothing(harness: Harness) -> None:
    """A spawn command that is no longer the requested spawn (stopped and restarted, removed, user
    deleted before a worker took it) is refused rather than starting an orphan server."""
    harness.cluster.start("spawner")
    old = spawn_cmd("hugo")
    await harness.desire("hugo", "", "a-newer-spawn")
    await harness.bus.publish(old)
    never = spawn_cmd("ivan")  # no desired state at all: e.g. the user was deleted
    await harness.bus.publish(never)
    ok = spawn_cmd("hugo", "gpu")
    await harness.spawn(ok)  # published after the others: once it runs, they were handled
    await wait_for(lambda: _is(harness.status("hugo", "gpu"), "running"), timeout=20, what="running")
    assert await harness.row("hugo") is None and await harness.row("ivan") is None
    assert await harness.route("hugo") is None and await harness.route("ivan") is None


FAILING_POLL = "tests.support.failing_poll_backend:PollFailsBackend"


async def test_a_poll_that_raises_for_one_server_does_not_stop_the_others_being_polled(harness: Harness) -> None:
    # one backend system stops answering for some servers (a Slurm controller down, a Docker engine away):
    # the servers of another that exit are still noticed
    harness.cluster.start("spawner", spawner={"backend": FAILING_POLL})
    broken = [SpawnServer(user=f"broken{i}", server_name="", spawn_id=new_id(), backend=FAILING_POLL) for i in (1, 2)]
    alice = SpawnServer(user="alice", server_name="", spawn_id=new_id(), backend=FAILING_POLL)
    for cmd in [*broken, alice]:
        await harness.spawn(cmd)
        await wait_for(lambda c=cmd: _is(harness.status(c.user), "running"), timeout=20, what=f"{cmd.user} running")
    (harness.settings.data_dir / "poll-fails").touch()
    row = await harness.row("alice")
    assert row is not None
    os.kill(row.state["pid"], signal.SIGKILL)
    await wait_for(lambda: _is(harness.status("alice"), "stopped"), timeout=10, what="alice's exit noticed")
    assert await harness.route("alice") is None
    for cmd in broken:  # what cannot be polled is left as it is (never recorded gone on a failed poll)
        assert await harness.status(cmd.user) == "running"
    for cmd in broken:
        await harness.bus.publish(StopServer(user=cmd.user, spawn_id=cmd.spawn_id, backend=FAILING_POLL))
        await wait_for(lambda c=cmd: _is(harness.status(c.user), "stopped"), what=f"{cmd.user} stopped")


async def test_an_adopted_spawn_whose_profile_was_removed_fails_and_leaves_no_server(harness: Harness) -> None:
    # the worker dies once the server runs and its state is saved; the profile is then removed from the
    # settings: the adopter cannot finish that spawn, and must not leave its server running unowned
    profiles = [{"display_name": "Keep", "slug": "keep", "default": True},
                {"display_name": "Gone", "slug": "gone", "overrides": {"environment": {"SIZE": "gone"}}}]
    first = harness.cluster.start("spawner", spawner={"profiles": profiles},
                                  extra_env={"FLEETHUB_FAULT": "spawner.after_state_saved:kill"})
    cmd = SpawnServer(user="alice", server_name="", spawn_id=new_id(), user_options={"profile": "gone"})
    await harness.desire(cmd.user, cmd.server_name, cmd.spawn_id)
    async with harness.sessions() as s, s.begin():  # the options, as the api records them with the spawn
        await s.execute(update(Server).where(Server.spawn_id == cmd.spawn_id).values(user_options=cmd.user_options))
    await harness.bus.publish(cmd)
    await wait_for(lambda: _exited(first), timeout=20, what="the first worker killed at its crash point")
    row = await harness.row("alice")
    assert row is not None and row.status == "pending" and row.state.get("pid"), row
    pid = row.state["pid"]
    assert pid_alive(pid)
    harness.cluster.start("spawner", spawner={"profiles": profiles[:1]})
    await wait_for(lambda: _is(harness.status("alice"), "failed"), timeout=20, what="the adopted spawn failed")
    row = await harness.row("alice")
    assert row is not None and "gone" in (row.message or ""), row.message
    await wait_for(lambda: _gone(pid), what="the server of the removed profile ended")
    assert await harness.route("alice") is None


async def _exited(proc: Any) -> bool:
    return proc.poll() is not None
