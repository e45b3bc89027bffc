"""The `system-user` backend passes the backend contract (tests/support/backend_contract.py), each server
running as a real Unix account made for the test: directly (the worker is root) and through sudo."""

from __future__ import annotations

import os
import pwd
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fleethub.shared.procs import signal_group
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.backend_contract import BackendContract, StartAndAdoptOnly
from tests.support.cluster import FAKE_SERVER
from tests.support.procfs import marked, status_ids
from tests.support.unix_users import require_root_tools, unix_user, venv_reachable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reachable() -> Iterator[None]:
    require_root_tools("sudo")
    with venv_reachable(FAKE_SERVER):
        yield


class SystemUserContract(BackendContract):
    backend_name = "system-user"
    serve_cmd: ClassVar[list[str]] = [sys.executable, str(FAKE_SERVER)]
    mediator: ClassVar[list[str]] = []

    @pytest.fixture
    def user(self, reachable: None) -> Iterator[str]:
        with unix_user("fhc") as pw:
            yield pw.pw_name

    @pytest.fixture
    def settings(self, tmp_path: Path) -> ServiceSettings:
        return load_settings(None, data_dir=tmp_path / "data",
                             spawner={"ip": "127.0.0.1", "system_user": {"mediator": self.mediator}})

    def _servers(self, identity: dict[str, Any]) -> list[int]:
        """The account's session leaders carrying the marker (the sudo above them is root's)."""
        uid = pwd.getpwnam(identity["account"]).pw_uid
        return [pid for pid in marked(identity["marker"])
                if status_ids(pid)["Uid"] == [uid] * 4 and os.getsid(pid) == pid]

    async def kill_server(self, state: dict[str, Any]) -> None:
        servers = self._servers(state)
        assert servers, f"no server runs as {state['account']} for {state}"
        for pid in servers:
            signal_group(pid, signal.SIGKILL)

    async def leftovers(self, identity: dict[str, Any]) -> list[str]:
        return [f"process {pid} (uid {status_ids(pid)['Uid'][0]}) carrying the marker {identity['marker']}"
                for pid in marked(identity["marker"])]

    async def remove_leftovers(self, identity: dict[str, Any]) -> None:
        for pid in marked(identity["marker"]):
            signal_group(pid, signal.SIGKILL)


class TestSystemUserDirectContract(SystemUserContract):
    """The worker is root and switches uid, gid and groups itself."""


class TestSystemUserSudoContract(SystemUserContract):
    """The worker starts servers through sudo and the as-user helper."""

    mediator: ClassVar[list[str]] = ["sudo", "-n", "-E", "-u", "{username}", "--"]


class TestSystemUserSudoContractSingleuser(StartAndAdoptOnly, TestSystemUserSudoContract):
    """Start, reach, stop and adoption after a killed worker with the real `jupyterhub-singleuser` (through
    sudo, its hub the contract's stand-in); the rest shows nothing more with it than with the small server."""

    serve_cmd: ClassVar[list[str]] = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]

    @pytest.fixture
    def settings(self, tmp_path: Path, hub_api_url: str) -> ServiceSettings:
        return load_settings(None, data_dir=tmp_path / "data", spawner={
            "ip": "127.0.0.1", "hub_api_url": hub_api_url, "system_user": {"mediator": self.mediator}})
