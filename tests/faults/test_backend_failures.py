"""F21: user servers that fail in every way the local backend can see, through the whole stack and the API.

Each failure ends in a terminal state with a message that says what happened, an event that says so
(`server.failed` with the message, or `server.stopped` with the reason), no process and no route left
(the oracle), and the user can start again.

A backend `start()` that hangs past `start_timeout` cannot happen with the local backend (its start returns
once the process is exec'd): `tests/support/stuck_backend.py` is a double whose start creates the process
and never returns, chosen by import path.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.cluster import FAKE_SERVER, wait_for
from tests.support.faultstack import FaultStack, T, fault_stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PLAN = {
    "hangs": {"FAKE_START_DELAY": "600"},  # never listens
    "exits": {"FAKE_EXIT_CODE": "3"},  # exits at once
    "dies": {"FAKE_EXIT_AFTER": "1"},  # exits 1 s after it started listening
}
HTTP_TIMEOUT = 3


async def _ended(stack: FaultStack, user: str, status: str) -> dict[str, object]:
    """Wait until the server's actual state is `status`; returns the row."""
    async def reached() -> dict[str, object] | None:
        state = await stack.server_state(user)
        return state if state is not None and state["status"] == status else None
    row: dict[str, object] = await wait_for(reached, timeout=T + HTTP_TIMEOUT, interval=0.1,
                                            what=f"{user}'s server {status}")
    return row


async def _start(stack: FaultStack, user: str) -> None:
    r = await stack.start_server(user)
    # 202 (still starting after slow_spawn_timeout), or 500 with the reason if it failed before that
    assert r.status_code in (201, 202, 500), r.text
    if r.status_code == 500:
        assert r.json()["message"].startswith("Spawn failed: "), r.text


async def test_f21_backend_failures(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    async with fault_stack(tmp_path, nats_url, database_url, nats_namespace,
                           api={"slow_spawn_timeout": 0.5, "slow_stop_timeout": 0.5},
                           spawner={"http_timeout": HTTP_TIMEOUT, "environment": {"FAKE_PLAN": json.dumps(PLAN)}}
                           ) as stack:
        await stack.create_users("nocmd", "hangs", "exits", "dies", "killed")

        # the command does not exist: the backend's start raises
        for worker in stack.named("spawner"):
            worker.restart(spawner={"cmd": ["/nonexistent/fleethub-test-server"]})
        await _start(stack, "nocmd")
        row = await _ended(stack, "nocmd", "failed")
        assert row["message"] == ("cannot run the server command '/nonexistent/fleethub-test-server': "
                                  "No such file or directory"), row
        event = await stack.events.wait("server.failed", user="nocmd")
        assert event.data["message"] == row["message"]
        model = await stack.server_model("nocmd")
        assert model is None or (not model["ready"] and not model["pending"]), model
        await stack.oracle.converged()
        for worker in stack.named("spawner"):
            worker.restart(spawner={"cmd": [sys.executable, str(FAKE_SERVER)]})

        for user in ("nocmd", "hangs", "exits", "dies", "killed"):
            await _start(stack, user)

        # it never answers HTTP: failed after http_timeout, its process ended
        row = await _ended(stack, "hangs", "failed")
        assert row["message"] == f"server did not answer HTTP within {HTTP_TIMEOUT}s", row
        # it exits before answering
        row = await _ended(stack, "exits", "failed")
        assert row["message"] == "server process exited before answering HTTP", row
        for user in ("hangs", "exits"):
            event = await stack.events.wait("server.failed", user=user)
            assert event.data["message"]

        # it dies by itself after it was ready; another is killed from outside (kill -9 of its group)
        await stack.events.wait("server.ready", user="dies", timeout=T)
        killed = await stack.wait_ready("killed")
        assert killed["ready"]
        pid = next(p.pid for p in (await stack.oracle.snapshot()).processes if p.user == "killed")
        os.killpg(pid, signal.SIGKILL)
        for user in ("dies", "killed"):
            row = await _ended(stack, user, "stopped")
            assert row["message"] == "exited", row
            event = await stack.events.wait("server.stopped", user=user)
            assert event.data["reason"] == "exited"
            await stack.wait_stopped(user)

        # the command exists again: nocmd starts
        await stack.wait_ready("nocmd")
        await stack.oracle.converged()

        # every one of them can start again (a new spawn; the misbehaving ones misbehave again)
        for user in ("hangs", "exits", "killed"):
            before = stack.events.spawn_ids(user)
            await _start(stack, user)
            await wait_for(lambda u=user, b=before: _new_spawn(stack, u, b), timeout=T, what=f"{user} respawned")
        await stack.wait_ready("killed")
        await _ended(stack, "exits", "failed")
        await _ended(stack, "hangs", "failed")
        await stack.oracle.converged()


async def _new_spawn(stack: FaultStack, user: str, before: list[str]) -> bool:
    return len(stack.events.spawn_ids(user)) > len(before)


async def test_f21_a_start_that_hangs_past_start_timeout(tmp_path: Path, nats_url: str, database_url: str,
                                                         nats_namespace: str) -> None:
    async with fault_stack(tmp_path, nats_url, database_url, nats_namespace, apis=1, proxies=1,
                           api={"slow_spawn_timeout": 0.5},
                           spawner={"backend": "tests.support.stuck_backend:StuckBackend", "start_timeout": 3}
                           ) as stack:
        await stack.create_users("stuck", "fine")
        await _start(stack, "stuck")
        # the start made its process, then hung: the spawn fails after start_timeout and the process the
        # backend made is found by its recorded identity (no pid was ever returned) and ended
        row = await _ended(stack, "stuck", "failed")
        assert row["message"] == "server did not start within 3s", row
        event = await stack.events.wait("server.failed", user="stuck")
        assert event.data["message"] == row["message"]
        await stack.oracle.converged()
        # the worker is not stuck with it: another user's start goes through, and stuck may try again
        await _start(stack, "fine")
        await stack.wait_ready("fine")
        before = stack.events.spawn_ids("stuck")
        await _start(stack, "stuck")
        await wait_for(lambda: _new_spawn(stack, "stuck", before), timeout=T, what="stuck respawned")
        await _ended(stack, "stuck", "failed")
        await stack.oracle.converged()
