"""The `docker` backend passes the backend contract (tests/support/backend_contract.py) against a real
engine (the session's private dockerd): each server is a container of the test image, running the stand-in
server with the host's Python bind-mounted (the real jupyterhub-singleuser runs in test_docker.py)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.backend_contract import BackendContract, StartAndAdoptOnly
from tests.support.cluster import FAKE_SERVER
from tests.support.dockerd import Dockerd, runtime_volumes, singleuser_command

pytestmark = pytest.mark.integration


class TestDockerContract(BackendContract):
    backend_name = "docker"
    serve_cmd: ClassVar[list[str]] = [sys.executable, str(FAKE_SERVER)]
    engine: ClassVar[Dockerd]

    @pytest.fixture
    def settings(self, tmp_path: Path, dockerd: Dockerd) -> ServiceSettings:
        TestDockerContract.engine = dockerd  # leftovers() looks into the engine itself, never via the backend
        volumes = {**runtime_volumes(), str(FAKE_SERVER.parent): f"{FAKE_SERVER.parent}:ro"}
        return load_settings(None, data_dir=tmp_path / "data", spawner={
            "backend": "docker",
            "docker": {"host": dockerd.host, "image": dockerd.image, "volumes": volumes,
                       # the engine's init (tini) as PID 1 hands the stop's SIGTERM to any server: a bare PID 1
                       # ignores a signal it has no handler for yet, and would die only at the SIGKILL, 5 s later
                       "extra_host_config": {"Init": True}},
        })

    @pytest.fixture
    def user(self) -> str:
        return f"contract-{secrets.token_hex(3)}"  # one engine for the session: a name of its own per test

    def _containers(self, identity: dict[str, Any]) -> list[dict[str, Any]]:
        info = self.engine.inspect(str(identity["name"]))
        labels = ((info or {}).get("Config") or {}).get("Labels") or {}  # type: ignore[attr-defined]
        return [info] if info is not None and labels.get("fleethub.spawn_id") == identity["spawn_id"] else []

    async def kill_server(self, state: dict[str, Any]) -> None:
        with self.engine.client() as c:
            c.post(f"/containers/{state['id']}/kill", params={"signal": "KILL"}).raise_for_status()

    async def leftovers(self, identity: dict[str, Any]) -> list[str]:
        return [f"container {c['Name']} ({c['State']['Status']})" for c in self._containers(identity)]

    async def remove_leftovers(self, identity: dict[str, Any]) -> None:
        with self.engine.client() as c:
            for container in self._containers(identity):
                c.delete(f"/containers/{container['Id']}", params={"force": "true"})


class TestDockerContractSingleuser(StartAndAdoptOnly, TestDockerContract):
    """The contract's tests that start a server, with the real `jupyterhub-singleuser` in the container (its
    hub: the contract's stand-in of the hub API, reached over the host's network). It takes seconds to answer
    on our shared machine, so only its adoption after a worker's SIGKILL is repeated (test_docker.py starts,
    reaches and stops it)."""

    serve_cmd: ClassVar[list[str]] = singleuser_command()
    ready_timeout: ClassVar[float] = 40.0
    test_start_reach_stop = None

    @pytest.fixture
    def settings(self, tmp_path: Path, dockerd: Dockerd, hub_api_url: str) -> ServiceSettings:
        TestDockerContract.engine = dockerd
        return load_settings(None, data_dir=tmp_path / "data", spawner={
            "backend": "docker", "hub_api_url": hub_api_url,
            "docker": {"host": dockerd.host, "image": dockerd.image, "volumes": runtime_volumes(),
                       "extra_host_config": {"Init": True}},
        })
