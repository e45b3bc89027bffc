"""Hub-wide spawn limits (`concurrent_spawn_limit`, `active_server_limit`): JupyterHub's 429 answers,
counted in PostgreSQL so they hold across api replicas, even when replicas race."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import httpx
import pytest

from fleethub.shared.events import StopServer
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.spawns import mark, replica

pytestmark = pytest.mark.integration

SPAWN_LIMITED = re.compile(r"Too many users trying to log in right now\. Try again in [3-6]0 seconds\.")
ACTIVE_LIMITED = "Active user limit exceeded. Try again in a few minutes."


def _limited(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
             **api: int) -> contextlib.AbstractAsyncContextManager[Hub]:
    return running_hub(hub_settings(tmp_path, nats_url, database_url, nats_namespace, api=api))


async def _start(hub: Hub, user: str, client: httpx.AsyncClient | None = None) -> httpx.Response:
    return await (client or hub.client).post(f"/hub/api/users/{user}/server", headers=await hub.headers_for(user))


async def test_concurrent_spawn_limit(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    async with _limited(tmp_path, nats_url, database_url, nats_namespace, concurrent_spawn_limit=1) as hub:
        assert (await _start(hub, "u1")).status_code == 202
        r = await _start(hub, "u2")  # u1's spawn, not yet taken by a worker, is pending
        assert r.status_code == 429 and r.headers["content-type"] == "application/json"
        assert 30 <= int(r.headers["retry-after"]) <= 60
        assert r.json()["status"] == 429 and SPAWN_LIMITED.fullmatch(r.json()["message"]), r.json()
        cmd = await hub.spawn_command()
        await mark(hub, "u1", "", cmd.spawn_id, "pending", started=False)  # taken, still pending
        assert (await _start(hub, "u2")).status_code == 429
        await mark(hub, "u1", "", cmd.spawn_id, "running")  # ready: room for one more spawn
        assert (await _start(hub, "u2")).status_code == 202
        cmd = await hub.spawn_command()
        await mark(hub, "u2", "", cmd.spawn_id, "failed", "no", started=False)  # a failed spawn is not pending
        assert (await _start(hub, "u3")).status_code == 202


async def test_active_server_limit(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    async with _limited(tmp_path, nats_url, database_url, nats_namespace, concurrent_spawn_limit=0,
                        active_server_limit=2) as hub:
        assert (await _start(hub, "u1")).status_code == 202
        u1 = await hub.spawn_command()
        assert (await _start(hub, "u2")).status_code == 202
        await hub.spawn_command()
        r = await _start(hub, "u3")
        assert r.status_code == 429 and r.json() == {"status": 429, "message": ACTIVE_LIMITED}
        assert int(r.headers["retry-after"]) > 0
        await mark(hub, "u1", "", u1.spawn_id, "running")
        stop = await hub.client.delete("/hub/api/users/u1/server", headers=await hub.headers_for("u1"))
        assert stop.status_code == 202
        assert isinstance((await hub.commands(1))[0], StopServer)
        await mark(hub, "u1", "", u1.spawn_id, "stopping")
        assert (await _start(hub, "u3")).status_code == 429  # a server still stopping holds its place
        await mark(hub, "u1", "", u1.spawn_id, "stopped")
        assert (await _start(hub, "u3")).status_code == 202


async def test_no_limits(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    async with _limited(tmp_path, nats_url, database_url, nats_namespace, concurrent_spawn_limit=0,
                        active_server_limit=0) as hub:
        answers = await asyncio.gather(*(_start(hub, f"u{i}") for i in range(8)))
        assert [r.status_code for r in answers] == [202] * 8


@pytest.mark.parametrize("limits", [{"concurrent_spawn_limit": 3},
                                    {"concurrent_spawn_limit": 0, "active_server_limit": 3}])
async def test_replicas_racing_never_exceed_a_limit(tmp_path: Path, nats_url: str, database_url: str,
                                                    nats_namespace: str, limits: dict[str, int]) -> None:
    async with _limited(tmp_path, nats_url, database_url, nats_namespace, **limits) as hub, replica(hub) as replica_b:
        users = [f"r{i}" for i in range(14)]
        headers = {u: await hub.headers_for(u) for u in users}
        clients = [hub.client, replica_b[2]]
        answers = await asyncio.gather(*(
            clients[i % 2].post(f"/hub/api/users/{u}/server", headers=headers[u]) for i, u in enumerate(users)
        ))
        codes = [r.status_code for r in answers]
        assert codes.count(202) == 3 and codes.count(429) == 11, codes
        assert len(await hub.commands(14, timeout=1)) == 3
