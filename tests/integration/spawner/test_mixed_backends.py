"""One hub offering "Big (Slurm)" and "Container (Docker)" side by side: each profile's spawn is carried out by
the worker process serving its backend (one worker per backend, as on a Slurm login node and a Docker
host), the real jupyterhub-singleuser runs as a Slurm job of the user and in a container of a real engine,
both are reached through the proxy and stopped with nothing left."""

from __future__ import annotations

import pwd
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import ServerState
from fleethub.shared.net import free_port
from tests.support.cluster import ensure_user, mint_token, running_stack, wait_for
from tests.support.dockerd import Dockerd, runtime_volumes, singleuser_command
from tests.support.slurm import Slurm

pytestmark = pytest.mark.integration

SINGLEUSER = str(Path(sys.executable).parent / "jupyterhub-singleuser")


async def test_slurm_and_docker_profiles_on_one_hub(tmp_path: Path, nats_url: str, database_url: str,
                                                   nats_namespace: str, slurm: Slurm, dockerd: Dockerd,
                                                   batch_user: pwd.struct_passwd) -> None:
    scientist, boxed = batch_user.pw_name, "dana"
    profiles = [
        {"display_name": "Big (Slurm)", "slug": "big", "default": True, "backend": "batch",
         "overrides": {"mem_limit": "300M"}},
        {"display_name": "Container (Docker)", "slug": "container", "backend": "docker",
         "overrides": {"cmd": singleuser_command(), "mem_limit": "512M",
                       "docker": {"image": dockerd.image, "volumes": runtime_volumes()}}},
    ]
    port = free_port()
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
        api={"slow_spawn_timeout": 60, "slow_stop_timeout": 60},
        spawner={"cmd": [SINGLEUSER], "start_timeout": 30, "http_timeout": 60, "profiles": profiles,
                 # how the workers reach their systems: worker settings (each worker needs only its own)
                 "batch": {"environment": slurm.env}, "docker": {"host": dockerd.host}},
        proxy={"port": port, "upstream_timeout": 90},
    ) as cluster:
        # a worker where each backend lives: it takes only that backend's commands
        cluster.start("spawner", log_name="spawner-batch", spawner={"backends": ["batch"]})
        cluster.start("spawner", log_name="spawner-docker", spawner={"backends": ["docker"]})
        engine = make_engine(cluster.settings.require_database_url(), pool_size=1)
        try:
            await cluster.wait_hub(timeout=60)
            clients = {}
            for user in (scientist, boxed):
                await ensure_user(cluster.settings, user)
                clients[user] = httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=90,
                    headers={"Authorization": f"token {mint_token(cluster.settings, user)}"})
            big = await clients[scientist].post(f"/hub/api/users/{scientist}/server")  # the default profile
            assert big.status_code == 201, f"{big.text}\n{cluster.logs()}"
            box = await clients[boxed].post(f"/hub/api/users/{boxed}/server", json={"profile": "container"})
            assert box.status_code == 201, f"{box.text}\n{cluster.logs()}"

            # both answer through the proxy
            for user, client in clients.items():
                r = await client.get(f"/user/{user}/api")
                assert r.status_code == 200 and "version" in r.json(), (user, r.text)
            # the Slurm job runs as the user, with the profile's memory; the container has its own limit
            jobs = slurm.live_jobs("%u", "%T", "%m")
            assert jobs == [[scientist, "RUNNING", "300M"]], jobs
            containers = [c for c in dockerd.containers()
                          if dict(c.get("Labels") or {}).get("fleethub.user") == boxed]  # type: ignore[call-overload]
            assert len(containers) == 1 and containers[0]["State"] == "running", containers
            inspected = dockerd.inspect(str(containers[0]["Id"]))
            assert inspected is not None
            assert inspected["HostConfig"]["Memory"] == 512 * 1024**2  # type: ignore[index]
            # each spawn was carried out by its own backend's worker
            async with make_sessionmaker(engine)() as s:
                rows = {r.user_name: r for r in (await s.execute(select(ServerState))).scalars()}
            assert (rows[scientist].backend, rows[boxed].backend) == ("batch", "docker")
            assert rows[scientist].worker_id != rows[boxed].worker_id

            for user, client in clients.items():
                r = await client.delete(f"/hub/api/users/{user}/server")
                assert r.status_code == 204, (user, r.text)
            assert slurm.live_jobs("%i") == []
            await wait_for(lambda: _no_container(dockerd, boxed), timeout=15, what="the container removed")
        finally:
            for client in locals().get("clients", {}).values():
                await client.aclose()
            await engine.dispose()
            slurm.command("scancel", "-u", scientist, check=False)


async def _no_container(dockerd: Dockerd, user: str) -> bool:
    return not [c for c in dockerd.containers() if dict(c.get("Labels") or {}).get("fleethub.user") == user]  # type: ignore[call-overload]
