"""The batch backend on a real Slurm: a whole fleethub (auth, api, spawner, proxy as processes) spawns the real
jupyterhub-singleuser as a Slurm job of a real Unix account, through the REST API."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.services.spawner.backends import ServerSpec, load_backend
from fleethub.services.spawner.env import server_env
from fleethub.shared.bus import Bus
from fleethub.shared.events import ServerProgress, new_id, unwrap
from fleethub.shared.names import server_prefix
from fleethub.shared.net import free_port
from fleethub.shared.settings import load_settings
from tests.support.browser import follow, log_in
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for
from tests.support.procfs import processes_of
from tests.support.slurm import Slurm
from tests.support.spawn_form import spawn_through_form

pytestmark = pytest.mark.integration

SINGLEUSER = str(Path(sys.executable).parent / "jupyterhub-singleuser")
PASSWORD = "batch-user-password-1"
FAKE_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
PROFILES = [
    {"display_name": "Slurm", "slug": "slurm", "default": True},
    {"display_name": "Broken", "slug": "broken", "overrides": {"cmd": ["/nonexistent/fleethub-test-server"]}},
    {"display_name": "Closed", "slug": "closed",
     "overrides": {"start_timeout": 6, "batch": {"req_partition": "closed"}}},
]


@asynccontextmanager
async def batch_hub(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, slurm: Slurm,
                    user: str, **spawner: Any) -> AsyncIterator[tuple[Cluster, httpx.AsyncClient]]:
    """A hub whose servers are Slurm jobs, and an API client of `user` (through the proxy); `user` logs in
    with the password `PASSWORD`."""
    port = free_port()
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords={user: PASSWORD},
        auth={"authenticator": "password"},
        api={"slow_spawn_timeout": 60, "slow_stop_timeout": 60, "allow_named_servers": True},
        spawner={"backend": "batch", "cmd": [SINGLEUSER], "start_timeout": 30, "http_timeout": 60,
                 "batch": {"environment": slurm.env}, "profiles": PROFILES, **spawner},
        proxy={"port": port, "upstream_timeout": 90},
    ) as cluster:
        try:
            await cluster.wait_hub(timeout=60)
            await ensure_user(cluster.settings, user)
            token = mint_token(cluster.settings, user)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=90,
                                         headers={"Authorization": f"token {token}"}) as client:
                yield cluster, client
        finally:
            slurm.command("scancel", "-u", user, check=False)  # whatever a failed test left


def job_outputs(account: pwd.struct_passwd) -> str:
    """The output files of the user's jobs (for a failure's message)."""
    return "\n".join(f"==== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(Path(account.pw_dir).glob(".fleethub-*.log")))


def in_any_command_line(text: str) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return True
            except OSError:
                pass
    return False


async def progress_messages(settings: Any, server_name: str = "") -> list[str]:
    """The progress messages the spawner published (ServerProgress events) for `server_name`."""
    bus = Bus(settings.nats_url, settings.nats_namespace, "test")
    await bus.connect()
    try:
        info = await bus.js.stream_info(bus.names.evt_stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            event = unwrap((await bus.js.get_msg(bus.names.evt_stream, seq)).data or b"", "evt")[1]
            if isinstance(event, ServerProgress) and event.server_name == server_name:
                out.append(event.message)
        return out
    finally:
        await bus.close()


async def test_rest_api_spawn_is_a_slurm_job_of_the_user(tmp_path: Path, nats_url: str, database_url: str,
                                                         nats_namespace: str, slurm: Slurm,
                                                         batch_user: pwd.struct_passwd) -> None:
    name = batch_user.pw_name
    times = []
    async with batch_hub(tmp_path, nats_url, database_url, nats_namespace, slurm, name) as (cluster, client):
        # FLEETHUB_TEST_BATCH_SPAWNS=5 measures spawn-to-ready over several spawns (the report's median)
        for _ in range(int(os.environ.get("FLEETHUB_TEST_BATCH_SPAWNS", "1"))):
            t0 = time.monotonic()
            r = await client.post(f"/hub/api/users/{name}/server")
            assert r.status_code == 201, f"{r.status_code} {r.text}\n{job_outputs(batch_user)}\n{cluster.logs()}"
            times.append(time.monotonic() - t0)

            # squeue: one job, the user's, named after the server and spawn, running on our node
            jobs = slurm.live_jobs("%i", "%u", "%j", "%T", "%B")
            assert len(jobs) == 1, jobs
            job_id, owner, job_name, state, node = jobs[0]
            assert (owner, state, node) == (name, "RUNNING", slurm.node)
            assert re.fullmatch(rf"fh-{name}-_-[0-9a-f]{{12}}", job_name), job_name

            # the real server answers through the proxy, and runs as the user
            r = await client.get(f"/user/{name}/api")
            assert r.status_code == 200 and "version" in r.json(), r.text
            servers = [(pid, cmd) for pid, cmd in processes_of(name) if "jupyterhub-singleuser" in cmd]
            assert servers, processes_of(name)

            # its token came through the job's environment: not on any command line, not in the script
            environ = Path(f"/proc/{servers[0][0]}/environ").read_bytes().split(b"\0")
            token = next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"JUPYTERHUB_API_TOKEN="))
            assert len(token) >= 32 and not in_any_command_line(token)
            script = slurm.command("scontrol", "write", "batch_script", job_id, "-")
            assert "jupyterhub-singleuser" in script and token not in script

            messages = await progress_messages(cluster.settings)
            assert f"Batch job {job_id} queued" in messages or not any("queued" in m for m in messages)
            assert f"Batch job {job_id} running on {slurm.node}" in messages, messages

            # stop: the job is cancelled and gone, nothing of the user runs any more
            r = await client.delete(f"/hub/api/users/{name}/server")
            assert r.status_code == 204, r.text
            assert slurm.live_jobs("%i") == []
            assert [state for i, state in slurm.jobs("%i", "%T") if i == job_id] in (["CANCELLED"], [])
            await wait_for(lambda: _none_left(name), timeout=10, what=f"{name}'s processes gone")
    print(f"\nbatch spawn POST→ready: {', '.join(f'{t:.2f}' for t in times)} s "
          f"(median {statistics.median(times):.2f} s of {len(times)})")


async def _none_left(user: str) -> bool:
    return not processes_of(user)


async def test_failed_starts_say_why(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                                     slurm: Slurm, batch_user: pwd.struct_passwd) -> None:
    """A job whose command fails at once, and a job stuck in the queue (its partition is down): each spawn
    fails with a message saying so, and no job is left. (One hub for both: a hub takes seconds to start.)"""
    name = batch_user.pw_name
    async with batch_hub(tmp_path, nats_url, database_url, nats_namespace, slurm, name) as (cluster, client):
        t0 = time.monotonic()
        r = await client.post(f"/hub/api/users/{name}/servers/broken", json={"profile": "broken"})
        assert r.status_code == 500, f"{r.status_code} {r.text}\n{cluster.logs()}"
        message = r.json()["message"]
        assert re.search(r"Spawn failed: (batch job \d+ ended before its server ran|server process exited before "
                         r"answering HTTP)", message), message
        if "ended before its server ran" in message:  # seen failing by start: its output is in the message
            assert "/nonexistent/fleethub-test-server" in message, message
        print(f"\na failing job: 500 after {time.monotonic() - t0:.2f}s: {message}")
        assert slurm.live_jobs("%i") == []
        # why it failed is in the job's output, in the user's home, readable by the user alone
        outputs = list(Path(batch_user.pw_dir).glob(f".fleethub-fh-{name}-broken-*.log"))
        assert len(outputs) == 1, outputs
        assert "/nonexistent/fleethub-test-server" in outputs[0].read_text()
        st = outputs[0].stat()
        assert st.st_uid == batch_user.pw_uid and st.st_mode & 0o077 == 0, oct(st.st_mode)

        t0 = time.monotonic()
        r = await client.post(f"/hub/api/users/{name}/servers/waits", json={"profile": "closed"})
        took = time.monotonic() - t0
        assert r.status_code == 500, f"{r.status_code} {r.text}\n{cluster.logs()}"
        message = r.json()["message"]
        assert re.search(r"batch job \d+ still queued after 6s \(PENDING .*PartitionDown\)", message), message
        print(f"a queued job: 500 after {took:.2f}s: {message}")
        assert took < 15, took
        assert slurm.live_jobs("%i") == [], "the queued job was not cancelled"
        messages = await progress_messages(cluster.settings, "waits")
        assert any(re.fullmatch(r"Batch job \d+ queued", m) for m in messages), messages


async def test_the_job_of_a_killed_worker_is_adopted(tmp_path: Path, nats_url: str, database_url: str,
                                                     nats_namespace: str, slurm: Slurm,
                                                     batch_user: pwd.struct_passwd) -> None:
    """A worker SIGKILLed while its job is queued or starting: another worker finds the job (by its name when
    its id was never saved), keeps it, and the server becomes ready; one job, no second submit."""
    name = batch_user.pw_name
    # the fake server (standard library only, run by the system's Python): the test is about the adoption
    async with batch_hub(tmp_path, nats_url, database_url, nats_namespace, slurm, name, lease_ttl=2,
                         cmd=[FAKE_PYTHON, str(FAKE_SERVER)]) as (cluster, client):
        start = asyncio.create_task(client.post(f"/hub/api/users/{name}/server"))
        jobs = await wait_for(lambda: _live_jobs(slurm), timeout=30, interval=0.02, what="the job submitted")
        worker = next(proc for service, proc in cluster.procs if service == "spawner")
        worker.kill()
        worker.wait()
        job_id = jobs[0][0]
        print(f"\nworker killed while job {job_id} was {jobs[0][1]}")
        cluster.start("spawner")  # another worker: it adopts the row once the lease expired
        r = await start
        if r.status_code == 202:  # the api's wait ended before the adopter finished
            await wait_for(lambda: _ready(client, name), timeout=60, what=f"ready\n{cluster.logs()}")
        else:
            assert r.status_code == 201, f"{r.status_code} {r.text}\n{job_outputs(batch_user)}\n{cluster.logs()}"
        assert [j[0] for j in slurm.live_jobs("%i", "%T")] == [job_id], "the adopter submitted another job"
        r = await client.get(f"/user/{name}/api")
        assert r.status_code == 200, r.text
        r = await client.delete(f"/hub/api/users/{name}/server")
        assert r.status_code == 204, r.text
        assert slurm.live_jobs("%i") == []
        await wait_for(lambda: _none_left(name), timeout=10, what=f"{name}'s processes gone")


async def test_the_spawn_form_starts_a_slurm_job_with_the_limits(tmp_path: Path, nats_url: str, database_url: str,
                                                                  nats_namespace: str, slurm: Slurm,
                                                                  batch_user: pwd.struct_passwd) -> None:
    """The user logs in and presses Start in the spawn form with the Slurm profile: a job of theirs runs
    with --mem and --cpus-per-task from mem_limit and cpu_limit, and the pending page leads to the server."""
    name = batch_user.pw_name
    async with batch_hub(tmp_path, nats_url, database_url, nats_namespace, slurm, name, mem_limit="300M",
                         cpu_limit=0.5, cmd=[FAKE_PYTHON, str(FAKE_SERVER)]) as (cluster, client):
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as browser:
            await log_in(browser, name, PASSWORD)
            r = await spawn_through_form(browser, profile="slurm")
            assert r is not None and r.status_code == 302, r and r.text

            async def reached() -> httpx.Response | None:
                last, _ = await follow(browser, f"/hub/spawn-pending/{name}")
                return last if last.url.path.startswith(f"/user/{name}/") and last.status_code == 200 else None

            served = await wait_for(reached, timeout=60, interval=0.2, what=f"the server\n{cluster.logs()}")
            assert served.json()["user"] == name
            assert slurm.live_jobs("%u", "%T", "%m", "%C") == [[name, "RUNNING", "300M", "1"]]
            model = (await client.get(f"/hub/api/users/{name}")).json()
            assert model["servers"][""]["user_options"] == {"profile": "slurm"}
            r = await client.delete(f"/hub/api/users/{name}/server")
            assert r.status_code == 204, r.text
            assert slurm.live_jobs("%i") == []


async def test_a_start_cancelled_while_queued_leaves_a_job_that_stop_finds(tmp_path: Path, slurm: Slurm,
                                                                           batch_user: pwd.struct_passwd) -> None:
    """A stop while the job is queued cancels the worker's start before the job id is saved: another worker's
    stop, given the identity alone, finds the job by its name and cancels it."""
    name = batch_user.pw_name
    settings = load_settings(None, data_dir=tmp_path / "data", spawner={
        "backend": "batch", "cmd": [FAKE_PYTHON, str(FAKE_SERVER)],
        "batch": {"environment": slurm.env, "req_partition": "closed"}})
    backend = load_backend(settings, "batch")
    messages: list[str] = []

    async def progress(message: str) -> None:
        messages.append(message)

    spawn_id = new_id()
    spec = ServerSpec(user=name, server_name="", spawn_id=spawn_id, prefix=server_prefix(name),
                      env=server_env(settings, "k" * 32, name, "", spawn_id), config=settings.spawner,
                      progress=progress)
    identity = backend.identity(spec)
    start = asyncio.create_task(backend.start(spec, identity))

    async def queued() -> bool:
        return any(m.endswith(" queued") for m in messages)

    await wait_for(queued, timeout=20, what="the job queued")
    start.cancel()
    await asyncio.gather(start, return_exceptions=True)
    assert [j[1:] for j in slurm.live_jobs("%i", "%j", "%T")] == [[identity["job_name"], "PENDING"]]
    await load_backend(settings, "batch").stop(identity)
    assert slurm.live_jobs("%i") == []


async def _live_jobs(slurm: Slurm) -> list[list[str]]:
    return slurm.live_jobs("%i", "%T")


async def _ready(client: httpx.AsyncClient, name: str) -> bool:
    model = (await client.get(f"/hub/api/users/{name}")).json()
    return bool(model["servers"].get("", {}).get("ready"))


def test_the_fixture_talks_to_our_cluster_only(slurm: Slurm) -> None:
    """Every command the tests run names our slurm.conf (the machine's /etc/slurm is never read)."""
    out = subprocess.run(["scontrol", "show", "config"], env={**os.environ, **slurm.env}, capture_output=True,
                         text=True, timeout=20)
    assert re.search(rf"^SLURM_CONF\s*=\s*{re.escape(str(slurm.conf))}$", out.stdout, re.MULTILINE), out.stdout[:500]
    assert re.search(r"^ClusterName\s*=\s*fhtest$", out.stdout, re.MULTILINE)
