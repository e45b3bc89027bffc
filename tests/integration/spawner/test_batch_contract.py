"""The batch backend passes the backend contract on a real Slurm, its jobs submitted as a real Unix account
(the server: tests/support/fake_singleuser.py run by this venv's Python as that user)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fleethub.services.spawner.backends import ServerSpec
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.support.backend_contract import BackendContract, StartAndAdoptOnly
from tests.support.cluster import FAKE_SERVER
from tests.support.procfs import processes_of
from tests.support.slurm import Slurm

pytestmark = pytest.mark.integration


def job_processes(user: str, job_name: str) -> list[int]:
    """The live processes of `user` that belong to the Slurm job `job_name` (SLURM_JOB_NAME in their
    environment: slurmstepd sets it in every process of a batch job)."""
    marker = f"SLURM_JOB_NAME={job_name}".encode()
    out = []
    for pid, _ in processes_of(user):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                out.append(pid)
        except OSError:
            continue
    return out


# the fake server needs only the standard library: the system's Python runs it when there is one, so the
# jobs need no access to this venv's interpreter (which may live under a private directory such as /root)
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable


class TestBatchContract(BackendContract):
    backend_name = "batch"
    serve_cmd: ClassVar[list[str]] = [PYTHON, str(FAKE_SERVER)]
    start_timeout = 30.0
    gone_within = 15.0

    @pytest.fixture
    def user(self, batch_user: pwd.struct_passwd) -> str:
        return batch_user.pw_name

    @pytest.fixture
    def settings(self, tmp_path: Path, slurm: Slurm) -> ServiceSettings:
        self.slurm = slurm
        return load_settings(None, data_dir=tmp_path / "data",
                             spawner={"backend": "batch", "start_timeout": self.start_timeout,
                                      "batch": {"environment": slurm.env}})

    async def kill_server(self, state: dict[str, Any]) -> None:
        pids = job_processes(state["username"], state["job_name"])
        assert pids, f"no process of job {state['job_name']}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    async def leftovers(self, identity: dict[str, Any]) -> list[str]:
        left = [f"job {job_id} {state}" for job_id, name, state in self.slurm.live_jobs("%i", "%j", "%T")
                if name == identity["job_name"]]
        left += [f"process {pid}" for pid in job_processes(identity["username"], identity["job_name"])]
        return left

    async def remove_leftovers(self, identity: dict[str, Any]) -> None:
        for job_id, name in self.slurm.live_jobs("%i", "%j"):
            if name == identity["job_name"]:
                self.slurm.command("scancel", job_id, check=False)
        for pid in job_processes(identity["username"], identity["job_name"]):
            os.kill(pid, signal.SIGKILL)

    async def server_output(self, spec: ServerSpec, state: dict[str, Any]) -> str:
        """The job's output file, in its user's home (where the default script writes it)."""
        path = Path(pwd.getpwnam(state["username"]).pw_dir) / f".fleethub-{state['job_name']}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class TestBatchContractSingleuser(StartAndAdoptOnly, TestBatchContract):
    """Start-reach-stop and adoption after a worker SIGKILL again with the real `jupyterhub-singleuser` as the
    job (its hub: the contract's stand-in of the hub API); the other tests show nothing more with it."""

    serve_cmd: ClassVar[list[str]] = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]

    @pytest.fixture
    def settings(self, tmp_path: Path, slurm: Slurm, hub_api_url: str) -> ServiceSettings:
        self.slurm = slurm
        return load_settings(None, data_dir=tmp_path / "data",
                             spawner={"backend": "batch", "start_timeout": self.start_timeout,
                                      "hub_api_url": hub_api_url, "batch": {"environment": slurm.env}})
