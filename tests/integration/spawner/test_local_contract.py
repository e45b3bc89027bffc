"""The `local` backend passes the backend contract (tests/support/backend_contract.py)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fleethub.services.spawner.backends.local import MARKER_VAR
from fleethub.shared.procs import signal_group
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.backend_contract import BackendContract, StartAndAdoptOnly
from tests.support.cluster import FAKE_SERVER
from tests.support.procfs import marked

pytestmark = pytest.mark.integration


class TestLocalContract(BackendContract):
    backend_name = "local"
    serve_cmd: ClassVar[list[str]] = [sys.executable, str(FAKE_SERVER)]

    @pytest.fixture
    def settings(self, tmp_path: Path) -> ServiceSettings:
        return load_settings(None, data_dir=tmp_path / "data", spawner={"ip": "127.0.0.1"})

    async def kill_server(self, state: dict[str, Any]) -> None:
        signal_group(int(state["pid"]), signal.SIGKILL)

    async def leftovers(self, identity: dict[str, Any]) -> list[str]:
        return [f"process {pid} carrying {MARKER_VAR}={identity['marker']}" for pid in marked(identity["marker"])]

    async def remove_leftovers(self, identity: dict[str, Any]) -> None:
        for pid in marked(identity["marker"]):
            signal_group(pid, signal.SIGKILL)


class TestLocalContractSingleuser(StartAndAdoptOnly, TestLocalContract):
    """The contract's tests that start a server, with the real `jupyterhub-singleuser` (its hub: the
    contract's stand-in of the hub API). It takes 4-5 s to answer on our shared machine, so the tests that
    show nothing more with it than with the stand-in server above are left out (None: not collected)."""

    serve_cmd: ClassVar[list[str]] = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]

    @pytest.fixture
    def settings(self, tmp_path: Path, hub_api_url: str) -> ServiceSettings:
        return load_settings(None, data_dir=tmp_path / "data", spawner={"ip": "127.0.0.1", "hub_api_url": hub_api_url})
