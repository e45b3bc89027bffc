"""The docker backend end to end: spawns through the REST API and through the spawn form, carried out by a
real spawner worker in a container of a real engine, the real jupyterhub-singleuser reached through the
proxy (by the form's user through the hub's OAuth, into JupyterLab), stopped through the API with nothing
left; an image chosen among the allowed ones, one not allowed refused (400); an engine that cannot be
reached fails the spawn with a message the user reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.support.browser import follow, log_in
from tests.support.cluster import Cluster, ensure_user, mint_token, running_stack, wait_for
from tests.support.dockerd import Dockerd, runtime_volumes, singleuser_command
from tests.support.spawn_form import spawn_through_form

pytestmark = pytest.mark.integration


def _spawner(dockerd: Dockerd | None, host: str | None = None) -> dict[str, Any]:
    docker: dict[str, Any] = {"host": host or (dockerd.host if dockerd else None), "volumes": runtime_volumes()}
    if dockerd is not None:
        docker.update(image=dockerd.image, allowed_images={"Test image": dockerd.image, "Other": "other/img:1"})
    return {"backend": "docker", "cmd": singleuser_command(), "http_timeout": 60, "docker": docker}


async def _admin(cluster: Cluster, *users: str) -> httpx.AsyncClient:
    await ensure_user(cluster.settings, "admin", admin=True)
    for user in users:
        await ensure_user(cluster.settings, user)
    await cluster.wait_hub(timeout=60)
    token = mint_token(cluster.settings, "admin")
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{cluster.settings.proxy.port}",
                             headers={"Authorization": f"token {token}"}, timeout=90)


async def _progress(api: httpx.AsyncClient, user: str) -> list[dict[str, Any]]:
    """The progress events of `user`'s spawn, to its terminal one."""
    events = []
    async with api.stream("GET", f"/hub/api/users/{user}/server/progress") as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    return events


PASSWORDS = {"dana": "dana-password-1"}


@pytest.fixture
async def stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                dockerd: Dockerd) -> AsyncIterator[Cluster]:
    # the spawner worker is started by the test, once it follows the first spawn's progress stream
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, log_level="INFO",
                             start=("auth", "api", "proxy"), passwords=PASSWORDS,
                             auth={"authenticator": "password"}, api={"slow_spawn_timeout": 0.5},
                             spawner=_spawner(dockerd), proxy={"port": free_port()}) as cluster:
        yield cluster


async def test_spawns_through_the_api_and_the_form_run_in_containers_reached_through_the_proxy(
        stack: Cluster, dockerd: Dockerd) -> None:
    async with await _admin(stack, "dana") as api:
        refused = await api.post("/hub/api/users/dana/server", json={"image": "evil/miner:latest"})
        assert refused.status_code == 400, refused.text
        assert "image 'evil/miner:latest' is not allowed; choose one of: Other, Test image" in refused.json()["message"]

        started = await api.post("/hub/api/users/dana/server", json={"image": "Test image"})
        assert started.status_code == 202, started.text  # no worker yet: the command waits for one
        following = asyncio.create_task(_progress(api, "dana"))
        await asyncio.sleep(0.5)
        stack.start("spawner")
        events = await following
        assert events[-1].get("ready"), f"{events}\n{stack.logs()}"
        messages = [e["message"] for e in events]
        assert "Creating container jupyter-dana" in messages and "Starting container jupyter-dana" in messages

        # the real jupyter_server answers through the proxy, from inside the container
        answer = await api.get("/user/dana/api", follow_redirects=False)
        assert answer.status_code == 200 and "version" in answer.json(), answer.text
        info = dockerd.inspect("jupyter-dana")
        assert info is not None and info["State"]["Running"]  # type: ignore[index]
        assert info["Config"]["Labels"]["fleethub.user"] == "dana"  # type: ignore[index]
        assert info["Config"]["Image"] == dockerd.image  # type: ignore[index]
        assert info["HostConfig"]["NetworkMode"] == "host"  # type: ignore[index]
        model = (await api.get("/hub/api/users/dana")).json()
        assert model["servers"][""]["ready"] and model["servers"][""]["user_options"]["image"] == "Test image"

        stopped = await api.delete("/hub/api/users/dana/server")
        assert stopped.status_code in (202, 204), stopped.text
        await wait_for(lambda: _gone(dockerd, "jupyter-dana"), timeout=30, what="the container removed")
        assert (await api.get("/user/dana/api", follow_redirects=False)).status_code != 200
        await wait_for(lambda: _no_server(api, "dana"), timeout=30, what="dana's server recorded stopped")

        # the same through the spawn form, as a browser: log in, choose the image, follow to the server
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=60) as browser:
            await log_in(browser, "dana", PASSWORDS["dana"])
            bad = await spawn_through_form(browser, image="evil/miner:latest")
            assert bad is not None and bad.status_code == 400 and "is not allowed" in bad.text
            posted = await spawn_through_form(browser, image="Test image")
            assert posted is not None and posted.status_code == 302, posted.text

            async def reached() -> httpx.Response | None:
                last, _ = await follow(browser, "/hub/spawn-pending/dana")
                return last if last.url.path.startswith("/user/dana/") and last.status_code == 200 else None

            # through the proxy and the hub's OAuth to JupyterLab in the container
            served = await wait_for(reached, timeout=60, interval=0.3, what=f"dana's server\n{stack.logs()}")
            assert "jupyterlab" in served.text.lower(), served.url
        info = dockerd.inspect("jupyter-dana")
        assert info is not None and info["State"]["Running"]  # type: ignore[index]
        assert info["Config"]["Image"] == dockerd.image  # type: ignore[index]
        assert (await api.delete("/hub/api/users/dana/server")).status_code in (202, 204)
        await wait_for(lambda: _gone(dockerd, "jupyter-dana"), timeout=30, what="the container removed")


async def _no_server(api: httpx.AsyncClient, user: str) -> bool:
    return (await api.get(f"/hub/api/users/{user}")).json()["servers"] == {}


async def _gone(dockerd: Dockerd, name: str) -> bool:
    return dockerd.inspect(name) is None


async def test_an_engine_that_cannot_be_reached_fails_the_spawn_with_a_message(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    sock = tmp_path / "no-engine.sock"
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, api={"slow_spawn_timeout": 0.5},
                             spawner=_spawner(None, host=f"unix://{sock}"),
                             proxy={"port": free_port()}) as cluster, await _admin(cluster, "erin") as api:
        started = await api.post("/hub/api/users/erin/server")
        if started.status_code == 500:  # failed within slow_spawn_timeout: the POST says why, as JupyterHub's
            message = started.json()["message"]
        else:
            assert started.status_code == 202, started.text
            events = await asyncio.wait_for(_progress(api, "erin"), 60)
            assert events[-1].get("failed"), events
            message = events[-1]["message"]
        assert f"cannot reach the Docker engine at unix://{sock}" in message, message
        model = (await api.get("/hub/api/users/erin")).json()
        assert not model["servers"].get("", {}).get("ready")
