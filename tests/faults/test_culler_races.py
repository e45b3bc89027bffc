"""F24: the culler against a server being spawned, one already stopping, and its own crash mid-cull.

The culler passes every half second with a 2-second idle timeout while: a server spawns slowly (never culled
while pending: it becomes ready); a server is restarted by its user (the new, pending spawn is not culled);
a server's stop is under way with the spawner hung (the culler adds no second stop; the user's DELETE answers
202 while slow and 204 once stopped); the culler is SIGKILLed right after committing a stop
(`culler.after_stop_cmd`): that stop still happens, once. Then the same against jupyterhub-idle-culler.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from fleethub.shared.db.engine import make_engine
from fleethub.shared.net import free_port
from fleethub.shared.settings import ServiceSettings, child_env
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

CULL_AFTER = 2.0
SLOW_START = "6"  # seconds a spawn stays pending: three idle timeouts


@pytest.fixture
async def stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(  # the culler is started by the test (with and without its crash point)
        tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "spawner", "proxy"),
        api={"slow_spawn_timeout": 0.5, "slow_stop_timeout": 1},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
        proxy={"port": free_port()},
        culler={"timeout": CULL_AFTER, "every": 0.5},
    ) as cluster:
        await cluster.wait_hub(timeout=60)
        yield cluster


async def _server(api: httpx.AsyncClient, user: str) -> dict[str, object] | None:
    servers: dict[str, dict[str, object]] = (await api.get(f"/hub/api/users/{user}")).json()["servers"]
    return servers.get("")


async def _ready(api: httpx.AsyncClient, user: str) -> bool:
    server = await _server(api, user)
    return bool(server and server["ready"] and server["pending"] is None)


async def _gone(api: httpx.AsyncClient, user: str) -> bool:
    return await _server(api, user) is None


async def _stop_commands(settings: ServiceSettings, user: str) -> int:
    """How many stop commands were sent for `user`'s current or last spawn (the outbox keeps them an hour)."""
    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(
                "SELECT count(*) FROM outbox o, servers s JOIN users u ON u.id = s.user_id "
                "WHERE u.name = :user AND s.name = '' AND o.subject LIKE '%.cmd.local.stop.%' "
                "AND o.payload LIKE '%' || s.spawn_id || '%'"), {"user": user})).scalar_one())
    finally:
        await engine.dispose()


async def _watch_pending(api: httpx.AsyncClient, user: str, seen: list[object]) -> None:
    """Note every `pending` the user's server shows until it is ready."""
    while True:
        server = await _server(api, user)
        seen.append(server and server["pending"])
        if server and server["ready"] and server["pending"] is None:
            return
        await asyncio.sleep(0.1)


async def test_builtin_culler_races(stack: Cluster) -> None:
    s = stack.settings
    tag = secrets.token_hex(3)
    admin, pending = f"a{tag}", f"p{tag}"
    idle = [f"i{tag}{i}" for i in range(3)]
    await ensure_user(s, admin, admin=True)
    token = mint_token(s, admin)
    hub = f"http://127.0.0.1:{s.proxy.port}"
    async with httpx.AsyncClient(base_url=hub, headers={"Authorization": f"token {token}"}, timeout=30) as api:
        assert (await api.post("/hub/api/users", json={"usernames": [*idle, pending]})).status_code == 201
        for user in idle:
            assert (await api.post(f"/hub/api/users/{user}/server")).status_code in (201, 202)
            await wait_for(lambda u=user: _ready(api, u), timeout=60, what=f"{user} ready")

        # the crash: the culler dies right after committing its first stop; that stop is still carried out
        # (the api's relay publishes the culler's rows too), once, and nothing else was culled
        crashing = stack.start("culler", extra_env={"FLEETHUB_FAULT": "culler.after_stop_cmd:kill"})
        await asyncio.to_thread(crashing.wait, 60)
        assert crashing.returncode == -signal.SIGKILL, stack.logs()
        culled = [u for u in idle if (await _server(api, u) or {}).get("pending") == "stop" or await _gone(api, u)]
        assert len(culled) == 1, culled
        await wait_for(lambda: _gone(api, culled[0]), timeout=60, what=f"{culled[0]}'s culled server stopped")
        assert await _stop_commands(s, culled[0]) == 1
        stopping, other = [u for u in idle if u != culled[0]]
        assert await _ready(api, stopping) and await _ready(api, other)

        # already stopping: the spawner hangs, so the user's stop stays under way (202: slow); the culler, running
        # meanwhile, culls the other idle server and adds no second stop to the one stopping
        spawner = next(proc for name, proc in stack.procs if name == "spawner")
        os.kill(spawner.pid, signal.SIGSTOP)
        try:
            r = await api.delete(f"/hub/api/users/{stopping}/server")
            assert r.status_code == 202, r.text
            stack.start("culler")
            await wait_for(lambda: _pending_stop(api, other), timeout=60, what=f"the culler to cull {other}")
            assert (await _server(api, stopping) or {}).get("pending") == "stop"
        finally:
            os.kill(spawner.pid, signal.SIGCONT)
        for user in (stopping, other):
            await wait_for(lambda u=user: _gone(api, u), timeout=60, what=f"{user} stopped")
            assert await _stop_commands(s, user) == 1
        assert (await api.delete(f"/hub/api/users/{stopping}/server")).status_code == 204

        # pending: spawns now take SLOW_START s (three idle timeouts) while the culler passes every half second;
        # a new user's server and a restart of the one culled at first are never culled while pending
        stack.start("spawner", spawner={"environment": {"FAKE_START_DELAY": SLOW_START}})
        spawner.terminate()  # the slow worker alone takes the next spawns
        await asyncio.to_thread(spawner.wait, 30)
        seen: dict[str, list[object]] = {pending: [], culled[0]: []}
        for user in seen:
            assert (await api.post(f"/hub/api/users/{user}/server")).status_code == 202
        await asyncio.wait_for(asyncio.gather(*(_watch_pending(api, u, seen[u]) for u in seen)), 90)
        for user, pendings in seen.items():
            assert "stop" not in pendings and pendings[-1] is None, (user, pendings)
        # once ready and idle, they are culled in their turn, once each
        for user in seen:
            await wait_for(lambda u=user: _gone(api, u), timeout=60, what=f"{user} culled once idle")
            assert await _stop_commands(s, user) == 1


async def _pending_stop(api: httpx.AsyncClient, user: str) -> bool:
    return (await _server(api, user) or {}).get("pending") == "stop"


async def test_jupyterhub_idle_culler_skips_pending_servers(stack: Cluster, tmp_path: Path) -> None:
    s = stack.settings
    tag = secrets.token_hex(3)
    idle, pending, admin = f"i{tag}", f"p{tag}", f"a{tag}"
    await ensure_user(s, admin, admin=True)
    token = mint_token(s, admin)
    hub = f"http://127.0.0.1:{s.proxy.port}"
    async with httpx.AsyncClient(base_url=hub, headers={"Authorization": f"token {token}"}, timeout=30) as api:
        assert (await api.post("/hub/api/users", json={"usernames": [idle, pending]})).status_code == 201
        assert (await api.post(f"/hub/api/users/{idle}/server")).status_code in (201, 202)
        await wait_for(lambda: _ready(api, idle), timeout=60, what=f"{idle} ready")
        stack.start("spawner", spawner={"environment": {"FAKE_START_DELAY": SLOW_START}})
        first_spawner = next(proc for name, proc in stack.procs if name == "spawner")
        first_spawner.terminate()  # the slow spawner alone takes the next spawn
        await asyncio.to_thread(first_spawner.wait, 30)
        assert (await api.post(f"/hub/api/users/{pending}/server")).status_code == 202
        log = open(tmp_path / "idle-culler.log", "wb")  # closed below
        culler = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub_idle_culler", f"--url={hub}/hub/api", f"--timeout={int(CULL_AFTER)}",
             "--cull-every=1", "--concurrency=2"],
            env={**child_env(s), "JUPYTERHUB_API_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT,
        )
        seen: list[object] = []
        try:
            await asyncio.wait_for(_watch_pending(api, pending, seen), 90)
            await wait_for(lambda: _gone(api, idle), timeout=60, what=f"{idle} culled")
            await wait_for(lambda: _gone(api, pending), timeout=60, what=f"{pending} culled once ready and idle")
        finally:
            culler.terminate()
            culler.wait(10)
            log.close()
        assert "stop" not in seen and seen[-1] is None, seen
        assert await _stop_commands(s, pending) == 1
