"""The docker backend against a real Docker Engine (a private dockerd, `tests.support.dockerd`).

Servers run in containers of an image imported from a local root filesystem, with the host's /usr, the
Python install and this venv bind-mounted read-only: the real jupyterhub-singleuser, or the small
stand-in server (`tests/support/fake_singleuser.py`) where the server itself is not the point.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.services.spawner.backends.docker import ContainerError, DockerBackend
from fleethub.services.spawner.backends.docker_engine import EngineUnreachable
from fleethub.services.spawner.env import server_env
from fleethub.services.spawner.httpcheck import http_status
from fleethub.shared.names import server_prefix
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.cluster import FAKE_SERVER
from tests.support.dockerd import Dockerd, runtime_volumes, singleuser_command

pytestmark = pytest.mark.integration

SECRET_KEY = "k" * 64


def docker_settings(dockerd: Dockerd, hub_api_url: str, *, fake: bool = False, **spawner: Any) -> ServiceSettings:
    """Settings of a worker driving `dockerd`: the real singleuser, or (`fake`) the stand-in server."""
    docker = {"host": dockerd.host, "image": dockerd.image, "volumes": runtime_volumes(), **spawner.pop("docker", {})}
    if fake:
        docker["volumes"] = {**docker["volumes"], str(FAKE_SERVER.parent): f"{FAKE_SERVER.parent}:ro"}
    cmd = [sys.executable, str(FAKE_SERVER)] if fake else singleuser_command()
    return load_settings(None, spawner={"backend": "docker", "cmd": cmd, "hub_api_url": hub_api_url,
                                        "docker": docker, **spawner})


def make_spec(settings: ServiceSettings, user: str, server: str = "", *, progress: list[str] | None = None,
              spawn_id: str | None = None) -> ServerSpec:
    spawn_id = spawn_id or secrets.token_hex(8)

    async def record(message: str) -> None:
        if progress is not None:
            progress.append(message)

    return ServerSpec(user=user, server_name=server, spawn_id=spawn_id, prefix=server_prefix(user, server),
                      env=server_env(settings, SECRET_KEY, user, server, spawn_id, config=settings.spawner),
                      config=settings.spawner, progress=record)


def unique_user(stem: str) -> str:
    return f"{stem}{secrets.token_hex(3)}"


async def wait_answers(backend: DockerBackend, state: dict[str, Any], prefix: str, timeout: float = 60) -> float:
    """Seconds until `<target><prefix>api` answers below 500 (the readiness the worker waits for)."""
    t0 = time.monotonic()
    url = f"{backend.target(state)}{prefix}api"
    while time.monotonic() - t0 < timeout:
        status = await http_status(url)
        if status is not None and status < 500:
            return time.monotonic() - t0
        assert await backend.poll(state), "the container stopped before its server answered"
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def _ours(dockerd: Dockerd, user: str) -> list[dict[str, Any]]:
    return [c for c in dockerd.containers() if (c.get("Labels") or {}).get("fleethub.user") == user]


async def test_the_real_singleuser_runs_in_its_container(dockerd: Dockerd, hub_api_url: str,
                                                          tmp_path: Path) -> None:
    user = unique_user("ann")
    settings = docker_settings(
        dockerd, hub_api_url, mem_limit="1G", cpu_limit=1.5, mem_guarantee="128M", cpu_guarantee=0.25,
        docker={"volumes": {**runtime_volumes(), f"{tmp_path}/homes/{{username}}": "/srv/{username}"},
                "extra_create_kwargs": {"WorkingDir": "/tmp", "Labels": {"team": "data"}},
                "extra_host_config": {"ShmSize": 32 * 1024**2}},
    )
    backend = DockerBackend(settings)
    progress: list[str] = []
    spec = make_spec(settings, user, "lab", progress=progress)
    identity = backend.identity(spec)
    state = await backend.start(spec, identity)
    ready = await wait_answers(backend, state, spec.prefix)
    print(f"\nstart → singleuser answers: {ready:.2f}s")
    async with httpx.AsyncClient() as client:
        api = (await client.get(f"{backend.target(state)}{spec.prefix}api")).json()
    assert "version" in api  # jupyter_server's own answer, from inside the container
    assert progress == [f"Creating container jupyter-{user}.lab", f"Starting container jupyter-{user}.lab"]

    info = dockerd.inspect(f"jupyter-{user}.lab")
    assert info is not None and info["Id"] == state["id"] and info["Name"] == f"/jupyter-{user}.lab"
    assert info["Config"]["Labels"] == {"fleethub.user": user, "fleethub.server": "lab",  # type: ignore[index]
                                        "fleethub.spawn_id": spec.spawn_id, "team": "data"}
    assert info["Config"]["WorkingDir"] == "/tmp" and info["HostConfig"]["ShmSize"] == 32 * 1024**2  # type: ignore[index]
    host = info["HostConfig"]
    assert host["NetworkMode"] == "host"  # type: ignore[index]
    # no raw sockets: on the host's network a container's root could otherwise capture the loopback traffic
    # of every other server, the proxy and the hub (cookies, tokens)
    status = Path(f"/proc/{info['State']['Pid']}/status").read_text()  # type: ignore[index]
    cap_eff = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    assert not cap_eff & (1 << 13), f"CAP_NET_RAW in the container's effective set ({cap_eff:#x})"
    assert host["Memory"] == 1024**3 and host["NanoCpus"] == 1_500_000_000  # type: ignore[index]
    assert host["MemoryReservation"] == 128 * 1024**2 and host["CpuShares"] == 256  # type: ignore[index]
    mounts = {m["Destination"]: m for m in info["Mounts"]}  # type: ignore[attr-defined]
    assert mounts[f"/srv/{user}"]["Source"] == f"{tmp_path}/homes/{user}" and mounts[f"/srv/{user}"]["RW"]
    assert not mounts["/usr"]["RW"]
    assert (tmp_path / "homes" / user).is_dir()  # the engine made the user's directory
    env = dict(item.split("=", 1) for item in info["Config"]["Env"])  # type: ignore[index]
    assert env["JUPYTERHUB_SERVICE_URL"] == f"http://127.0.0.1:{identity['port']}{spec.prefix}"
    assert env["JUPYTERHUB_USER"] == user and env["MEM_LIMIT"] == str(1024**3) and env["CPU_LIMIT"] == "1.5"
    assert not [k for k in env if k.startswith("FLEETHUB_")]

    await backend.stop(state)
    assert not await backend.poll(state)
    assert dockerd.inspect(f"jupyter-{user}.lab") is None and _ours(dockerd, user) == []  # `remove`: nothing left
    assert await http_status(f"{backend.target(state)}{spec.prefix}api", timeout=1) is None


async def test_a_fresh_backend_finds_the_container_by_its_identity(dockerd: Dockerd, hub_api_url: str) -> None:
    settings = docker_settings(dockerd, hub_api_url, fake=True)
    user = unique_user("adopt")
    spec = make_spec(settings, user)
    identity = DockerBackend(settings).identity(spec)
    started = await DockerBackend(settings).start(spec, identity)
    adopter = DockerBackend(settings)  # another worker: it knows the recorded identity, nothing more
    found = await adopter.locate(identity)
    assert found is not None and found["id"] == started["id"]
    assert await adopter.poll(identity)
    await wait_answers(adopter, found, spec.prefix)
    # a stale state of another spawn of this server finds nothing and touches nothing
    stale = {**identity, "spawn_id": "older"}
    assert await adopter.locate(stale) is None and not await adopter.poll(stale)
    await adopter.stop(stale)
    assert await adopter.poll(identity)
    await adopter.stop(identity)
    await adopter.stop(identity)  # a second stop, and a stop of what is gone, are no errors
    assert _ours(dockerd, user) == []


async def test_a_container_of_an_older_spawn_is_replaced(dockerd: Dockerd, hub_api_url: str) -> None:
    settings = docker_settings(dockerd, hub_api_url, fake=True, docker={"remove": False})
    backend = DockerBackend(settings)
    user = unique_user("repl")
    first = make_spec(settings, user)
    old = await backend.start(first, backend.identity(first))
    await wait_answers(backend, old, first.prefix)
    await backend.stop(old)
    kept = dockerd.inspect(old["name"])  # remove = false: the stopped container stays for a post-mortem
    assert kept is not None and kept["State"]["Running"] is False  # type: ignore[index]
    assert not await backend.poll(old)

    second = make_spec(settings, user)
    new = await backend.start(second, backend.identity(second))
    try:
        assert new["name"] == old["name"] and new["id"] != old["id"]
        assert dockerd.inspect(old["id"]) is None  # the older spawn's container was removed first
        await wait_answers(backend, new, second.prefix)
        assert await backend.locate(old) is None
        await backend.stop(old)  # the older spawn's stop leaves the newer container alone
        assert await backend.poll(new)
    finally:
        await backend.stop(new)
        with dockerd.client() as c:
            c.delete(f"/containers/{new['id']}", params={"force": "true"})
    assert _ours(dockerd, user) == []


async def test_a_foreign_container_of_that_name_is_left_alone(dockerd: Dockerd, hub_api_url: str) -> None:
    settings = docker_settings(dockerd, hub_api_url, fake=True)
    backend = DockerBackend(settings)
    user = unique_user("foreign")
    name = f"jupyter-{user}"
    with dockerd.client() as c:
        made = c.post("/containers/create", params={"name": name},
                      json={"Image": dockerd.image, "Cmd": ["/bin/true"], "Labels": {"owner": "someone"}})
        made.raise_for_status()
    try:
        spec = make_spec(settings, user)
        with pytest.raises(ContainerError, match=f"a container named {name} exists that fleethub did not make"):
            await backend.start(spec, backend.identity(spec))
        assert dockerd.inspect(name)["Id"] == made.json()["Id"]  # type: ignore[index]
    finally:
        with dockerd.client() as c:
            c.delete(f"/containers/{made.json()['Id']}", params={"force": "true"})


async def test_a_server_that_exits_is_seen_and_removed(dockerd: Dockerd, hub_api_url: str) -> None:
    settings = docker_settings(dockerd, hub_api_url, fake=True, environment={"FAKE_EXIT_AFTER": "0.5"})
    backend = DockerBackend(settings)
    user = unique_user("exits")
    spec = make_spec(settings, user)
    state = await backend.start(spec, backend.identity(spec))
    deadline = time.monotonic() + 20
    while await backend.poll(state):
        assert time.monotonic() < deadline, "the exited server still polls as running"
        await asyncio.sleep(0.2)
    assert _ours(dockerd, user) == []  # its server is over: `remove` leaves nothing


async def test_an_image_missing_from_the_engine_fails_with_a_message(dockerd: Dockerd, hub_api_url: str) -> None:
    settings = docker_settings(dockerd, hub_api_url, fake=True, docker={"image": "nowhere/none:0"})
    backend = DockerBackend(settings)
    user = unique_user("noimg")
    spec = make_spec(settings, user)
    with pytest.raises(ContainerError, match=r"image 'nowhere/none:0' is not on the Docker engine at unix://.*: "
                                             r"pull or load it there first"):
        await backend.start(spec, backend.identity(spec))
    assert _ours(dockerd, user) == []


async def test_an_unreachable_engine_fails_the_start_with_a_message(tmp_path: Path) -> None:
    sock = tmp_path / "no-engine.sock"
    settings = load_settings(None, spawner={"backend": "docker", "docker": {"host": f"unix://{sock}"}})
    backend = DockerBackend(settings)
    spec = make_spec(settings, "nobody")
    identity = backend.identity(spec)
    with pytest.raises(ContainerError, match=f"cannot reach the Docker engine at unix://{sock}"):
        await backend.start(spec, identity)
    await backend.stop(identity)  # the engine made nothing: the worker's stop after the failure returns
    with pytest.raises(EngineUnreachable, match="cannot reach"):  # another worker cannot know: it says so
        await DockerBackend(settings).poll(identity)


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def test_an_engine_reached_over_tcp(dockerd: Dockerd, hub_api_url: str) -> None:
    """`tcp://host:port` (DOCKER_HOST style): the engine's socket relayed on a loopback port."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(str(dockerd.socket))
        await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))

    relay = await asyncio.start_server(forward, "127.0.0.1", 0)
    port = relay.sockets[0].getsockname()[1]
    try:
        settings = docker_settings(dockerd, hub_api_url, fake=True, docker={"host": f"tcp://127.0.0.1:{port}"})
        backend = DockerBackend(settings)
        user = unique_user("tcp")
        spec = make_spec(settings, user)
        state = await backend.start(spec, backend.identity(spec))
        await wait_answers(backend, state, spec.prefix)
        assert dockerd.inspect(state["name"])["Id"] == state["id"]  # type: ignore[index]
        await backend.stop(state)
        assert _ours(dockerd, user) == []
    finally:
        relay.close()
        await relay.wait_closed()
