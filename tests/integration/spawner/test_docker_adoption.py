"""F4 for the docker backend: a spawner worker SIGKILLed after the engine made the container, before the
worker recorded anything but the planned identity. Another worker adopts the spawn, finds the container by
its name and labels, keeps it (no second container) and finishes the spawn: the server answers through
the proxy."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import ServerState
from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for
from tests.support.dockerd import Dockerd, runtime_volumes

pytestmark = pytest.mark.integration

PULL_EXPIRY = 1.5  # a held worker's pull request expires on the server after a second


async def _row(cluster: Cluster, user: str) -> ServerState | None:
    engine = make_engine(cluster.settings.require_database_url(), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as s:
            return (await s.execute(select(ServerState).where(ServerState.user_name == user,
                                                              ServerState.server_name == ""))).scalar()
    finally:
        await engine.dispose()


def _containers(dockerd: Dockerd, user: str) -> list[dict[str, Any]]:
    return [c for c in dockerd.containers() if (c.get("Labels") or {}).get("fleethub.user") == user]


async def _true(value: bool) -> bool:
    return value


async def test_a_worker_killed_once_the_container_exists_is_finished_by_another(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, dockerd: Dockerd) -> None:
    volumes = {**runtime_volumes(), str(FAKE_SERVER.parent): f"{FAKE_SERVER.parent}:ro"}
    spawner = {"backend": "docker", "cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 2, "http_timeout": 15,
               "docker": {"host": dockerd.host, "image": dockerd.image, "volumes": volumes,
                          "extra_host_config": {"Init": True}}}
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
                             log_level="INFO", spawner=spawner, api={"slow_spawn_timeout": 1},
                             proxy={"port": free_port()}) as cluster:
        armed = cluster.start("spawner", extra_env={"FLEETHUB_FAULT": "spawner.after_backend_create:kill"})
        other = cluster.start("spawner")
        try:
            await cluster.wait_hub(timeout=60)
            await wait_for(lambda: _true("running (backend" in (cluster.log_dir / "spawner-1.log").read_text()),
                           timeout=60, what="the second worker running")
            await ensure_user(cluster.settings, "admin", admin=True)
            await ensure_user(cluster.settings, "crash")
            headers = {"Authorization": f"token {mint_token(cluster.settings, 'admin')}"}
            hub = f"http://127.0.0.1:{cluster.settings.proxy.port}"
            async with httpx.AsyncClient(base_url=hub, headers=headers, timeout=30) as api:
                other.send_signal(signal.SIGSTOP)  # the armed worker takes the command
                await asyncio.sleep(PULL_EXPIRY)
                try:
                    post = asyncio.create_task(api.post("/hub/api/users/crash/server"))
                    await wait_for(lambda: _true(armed.poll() is not None), timeout=30,
                                   what=f"the armed worker to die at its crash point\n{cluster.logs()}")
                finally:
                    other.send_signal(signal.SIGCONT)
                row = await _row(cluster, "crash")
                assert row is not None and row.status == "pending"
                assert row.state["name"] == "jupyter-crash" and "id" not in row.state  # the identity alone
                made = _containers(dockerd, "crash")
                assert len(made) == 1 and made[0]["Labels"]["fleethub.spawn_id"] == row.spawn_id

                async def finished() -> bool:
                    now = await _row(cluster, "crash")
                    if now is None or now.status != "running":
                        return False
                    r = await api.get("/user/crash/api")
                    return r.status_code == 200 and r.json().get("user") == "crash"

                await wait_for(finished, timeout=20, interval=0.2,
                               what=f"the spawn finished by the other worker\n{cluster.logs()}")
                assert (await post).status_code in (201, 202)
                now = await _row(cluster, "crash")
                assert now is not None and now.spawn_id == row.spawn_id and now.state["id"] == made[0]["Id"]
                assert [c["Id"] for c in _containers(dockerd, "crash")] == [made[0]["Id"]]  # kept, not made again

                assert (await api.delete("/hub/api/users/crash/server")).status_code in (202, 204)
                await wait_for(lambda: _true(_containers(dockerd, "crash") == []), timeout=30,
                               what="the container removed")
        finally:
            if other.poll() is None:
                other.send_signal(signal.SIGCONT)
