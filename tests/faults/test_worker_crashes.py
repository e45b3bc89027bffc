"""F3–F7: a spawner worker SIGKILLed at each step of a spawn or a stop, in a stack with two workers.

The worker that dies is armed with a crash point (`FLEETHUB_FAULT=<point>:kill`); the other one is held
with SIGSTOP while the command is published, so the armed worker is the one that takes it (a stopped
worker's outstanding pull request expires on the server after a second and it cannot make another), and
released once the armed worker is dead. Each test then asserts, within 10 s of the kill: the server is
running and answers through the proxy (or, for a stop, is stopped with its route gone), exactly one user
server process carries the spawn's marker and it is the one the database names (no orphan, no duplicate),
and `server.ready` (or `server.stopped`) was announced once for the spawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fleethub.services.spawner.backends.local import MARKER_VAR
from fleethub.shared.bus import Bus
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import ServerState
from fleethub.shared.events import ServerReady, ServerStopped, unwrap
from fleethub.shared.names import encode_token, route_key
from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CONVERGENCE = 10.0  # seconds after the kill by which the invariants must hold again
PULL_EXPIRY = 1.5  # a worker's pull request lasts 1 s on the server (`shared/bus/consume.py`), plus a margin


@dataclass
class Stack:
    """A stack with an api, auth, a proxy and two spawner workers: `armed` (crash point on) and `other`."""

    cluster: Cluster
    armed: subprocess.Popen[bytes]
    other: subprocess.Popen[bytes]
    api: httpx.AsyncClient
    bus: Bus
    hub: str

    async def row(self, user: str) -> ServerState | None:
        """`user`'s default server's `server_states` row, read afresh."""
        engine = make_engine(self.cluster.settings.require_database_url(), pool_size=1)
        try:
            async with make_sessionmaker(engine)() as s:
                return (await s.execute(select(ServerState).where(ServerState.user_name == user,
                                                                  ServerState.server_name == ""))).scalar()
        finally:
            await engine.dispose()

    async def events(self, kind: type[Any], spawn_id: str) -> int:
        """How many `kind` events of `spawn_id` the events stream holds."""
        js = self.bus.js
        info = await js.stream_info(self.bus.names.evt_stream)
        n = 0
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(self.bus.names.evt_stream, seq)
            except Exception:
                continue
            event = unwrap(msg.data, "evt")[1]
            if isinstance(event, kind) and event.spawn_id == spawn_id:
                n += 1
        return n

    async def through_proxy(self, user: str) -> bool:
        r = await self.api.get(f"{self.hub}/user/{user}/api")
        return r.status_code == 200 and r.json().get("user") == user

    async def hold_other(self) -> None:
        """SIGSTOP the unarmed worker and let its pull request expire: the armed one takes what comes next."""
        self.other.send_signal(signal.SIGSTOP)
        await asyncio.sleep(PULL_EXPIRY)

    def release_other(self) -> None:
        self.other.send_signal(signal.SIGCONT)

    async def armed_dies(self) -> float:
        """Wait for the armed worker to kill itself at its crash point; the moment it was seen dead."""
        await wait_for(lambda: _true(self.armed.poll() is not None), timeout=30,
                       what=f"the armed worker to die at its crash point\n{self.cluster.logs()}")
        return time.monotonic()


async def _true(value: bool) -> bool:
    return value


def marker_of(pid: int) -> str | None:
    """The marker process `pid` carries, if any."""
    prefix = f"{MARKER_VAR}=".encode()
    for var in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if var.startswith(prefix):
            return var[len(prefix):].decode()
    return None


def named_by(row: ServerState, pid: int) -> bool:
    """Whether the process `pid` is the server the row's state names (its marker, and its pid if recorded)."""
    return marker_of(pid) == row.state.get("marker") and row.state.get("pid", pid) == pid


def server_processes(user: str) -> list[int]:
    """Live session leaders on this machine marked as one of `user`'s servers (any spawn)."""
    needle = f"{MARKER_VAR}={encode_token(user)}.".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != pid:
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":
            continue
        if any(var.startswith(needle) for var in environ.split(b"\0")):
            found.append(pid)
    return found


@contextlib.asynccontextmanager
async def two_worker_stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, *,
                           armed_env: dict[str, str] | None = None, armed: dict[str, Any] | None = None,
                           server_env: dict[str, str] | None = None, lease_ttl: float = 2) -> AsyncIterator[Stack]:
    """auth, api, a proxy and two spawner workers: `armed` started first with `armed_env` added to its
    environment and `armed` settings overrides, then the other; users `crash` and `steady` exist."""
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
        log_level="INFO",
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": lease_ttl, "http_timeout": 15,
                 "environment": server_env or {}},
        api={"slow_spawn_timeout": 1},
        proxy={"port": free_port()},
    ) as cluster:
        first = cluster.start("spawner", extra_env=armed_env, **(armed or {}))
        other = cluster.start("spawner")
        bus = Bus(nats_url, nats_namespace, "test")
        await bus.connect()
        hub = f"http://127.0.0.1:{cluster.settings.proxy.port}"
        try:
            await cluster.wait_hub(timeout=60)
            await wait_for(lambda: _true("running (backend" in (cluster.log_dir / "spawner-1.log").read_text()),
                           timeout=60, what="the second worker running")
            await ensure_user(cluster.settings, "admin", admin=True)
            headers = {"Authorization": f"token {mint_token(cluster.settings, 'admin')}"}
            async with httpx.AsyncClient(base_url=hub, headers=headers, timeout=15) as api:
                r = await api.post("/hub/api/users", json={"usernames": ["crash", "steady"]})
                assert r.status_code == 201, r.text
                yield Stack(cluster, first, other, api, bus, hub)
        finally:
            if other.poll() is None:
                other.send_signal(signal.SIGCONT)
            await bus.close()


@pytest.fixture
async def two_workers(request: pytest.FixtureRequest, tmp_path: Path, nats_url: str, database_url: str,
                      nats_namespace: str) -> AsyncIterator[Stack]:
    """The two-worker stack, the first worker armed to die at the crash point given as the parameter."""
    async with two_worker_stack(tmp_path, nats_url, database_url, nats_namespace,
                                armed_env={"FLEETHUB_FAULT": f"{request.param}:kill"}) as stack:
        yield stack


async def _spawn_killed(stack: Stack) -> tuple[str, float, asyncio.Task[httpx.Response]]:
    """Hold the other worker, request a spawn, wait for the armed worker to die; the spawn id, the moment
    of death and the request (still answering, perhaps)."""
    await stack.hold_other()
    try:
        post = asyncio.create_task(stack.api.post("/hub/api/users/crash/server"))
        killed = await stack.armed_dies()
    finally:
        stack.release_other()
    row = await stack.row("crash")
    assert row is not None
    return row.spawn_id, killed, post


async def _assert_finished_by_the_other(stack: Stack, spawn_id: str, killed: float,
                                        post: asyncio.Task[httpx.Response]) -> None:
    async def converged() -> bool:
        row = await stack.row("crash")
        procs = server_processes("crash")
        return (row is not None and row.status == "running" and row.spawn_id == spawn_id and len(procs) == 1
                and named_by(row, procs[0]) and await stack.through_proxy("crash"))

    await wait_for(converged, timeout=CONVERGENCE, interval=0.1,
                   what=f"the spawn finished by the other worker\n{stack.cluster.logs()}")
    print(f"\nconverged {time.monotonic() - killed:.2f}s after the kill")
    answer = await post
    assert answer.status_code in (201, 202), answer.text  # never a 500 for a worker's death
    model = (await stack.api.get("/hub/api/users/crash")).json()
    assert model["servers"][""]["ready"] is True
    assert await stack.events(ServerReady, spawn_id) == 1
    assert len(server_processes("crash")) == 1  # still: nothing started a second one meanwhile
    route = await stack.bus.routes.get(route_key("crash", ""))
    assert route is not None and route.spawn_id == spawn_id


@pytest.mark.parametrize("two_workers", ["spawner.after_lease_before_start"], indirect=True)
async def test_f3_killed_after_the_lease_before_start(two_workers: Stack) -> None:
    stack = two_workers
    spawn_id, killed, post = await _spawn_killed(stack)
    await _assert_finished_by_the_other(stack, spawn_id, killed, post)


@pytest.mark.parametrize("two_workers", ["spawner.after_backend_create"], indirect=True)
async def test_f4_killed_after_the_process_exists_before_its_state_is_saved(two_workers: Stack) -> None:
    stack = two_workers
    spawn_id, killed, post = await _spawn_killed(stack)
    orphan = server_processes("crash")
    assert len(orphan) == 1  # the dead worker's server runs, with no pid recorded anywhere
    row = await stack.row("crash")
    assert row is not None and "pid" not in row.state and row.state.get("marker")
    await _assert_finished_by_the_other(stack, spawn_id, killed, post)
    assert server_processes("crash") == orphan  # adopted, not started again


@pytest.mark.parametrize("two_workers", ["spawner.after_state_saved"], indirect=True)
async def test_f5_killed_after_the_state_is_saved_before_the_route(two_workers: Stack) -> None:
    stack = two_workers
    spawn_id, killed, post = await _spawn_killed(stack)
    await _assert_finished_by_the_other(stack, spawn_id, killed, post)


@pytest.mark.parametrize("two_workers", ["spawner.after_route_before_ack"], indirect=True)
async def test_f6_killed_after_ready_before_the_ack(two_workers: Stack) -> None:
    stack = two_workers
    spawn_id, killed, post = await _spawn_killed(stack)
    await _assert_finished_by_the_other(stack, spawn_id, killed, post)


@pytest.mark.parametrize("two_workers", ["spawner.stop_after_backend_kill"], indirect=True)
async def test_f7_killed_during_a_stop_after_the_server_ended(two_workers: Stack) -> None:
    stack = two_workers
    r = await stack.api.post("/hub/api/users/crash/server")
    assert r.status_code in (201, 202), r.text
    await wait_for(lambda: stack.through_proxy("crash"), timeout=30, what="the server running")
    row = await stack.row("crash")
    assert row is not None
    spawn_id = row.spawn_id
    await stack.hold_other()
    try:
        stop = await stack.api.delete("/hub/api/users/crash/server")
        assert stop.status_code in (202, 204), stop.text
        killed = await stack.armed_dies()
    finally:
        stack.release_other()

    async def converged() -> bool:
        row = await stack.row("crash")
        return (row is not None and row.status == "stopped" and not server_processes("crash")
                and await stack.bus.routes.get(route_key("crash", "")) is None)

    await wait_for(converged, timeout=CONVERGENCE, interval=0.1,
                   what=f"the stop finished by the other worker\n{stack.cluster.logs()}")
    print(f"\nconverged {time.monotonic() - killed:.2f}s after the kill")
    assert await stack.events(ServerStopped, spawn_id) == 1
    assert not await stack.through_proxy("crash")
    model = (await stack.api.get("/hub/api/users/crash")).json()
    assert "" not in model["servers"]
