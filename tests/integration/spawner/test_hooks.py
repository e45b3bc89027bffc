"""`spawner.pre_spawn_hook` and `post_stop_hook` in a real spawner worker (hooks of tests/support/spawn_hooks.py,
named by import path), against real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from fleethub.shared.events import ServerFailed, StopServer
from tests.integration.spawner.test_spawner import Harness, _has_event, _is, harness, spawn_cmd
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration
__all__ = ["harness"]  # the fixture, shared with test_spawner.py

REPO = Path(__file__).resolve().parents[3]
HOOKS = "tests.support.spawn_hooks"


def _start_worker(h: Harness, log: Path, **spawner: str) -> None:
    h.cluster.start("spawner", extra_env={"HOOK_LOG": str(log), "PYTHONPATH": str(REPO)},
                    spawner={**spawner, "post_stop_hook": f"{HOOKS}:record_stop",
                             "environment": {"FAKE_ENV_DUMP": str(log.parent / "env-{username}.json")}})


def _calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


async def _called(log: Path, spawn_id: str) -> bool:
    return any(c["spawn_id"] == spawn_id for c in _calls(log))


async def test_pre_spawn_hook_changes_the_servers_environment_and_post_stop_hook_sees_the_stop(
        harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "hooks.jsonl"
    _start_worker(harness, log, pre_spawn_hook=f"{HOOKS}:add_env")
    cmd = spawn_cmd("hana")
    await harness.spawn(cmd)
    await wait_for(lambda: _is(harness.status("hana"), "running"), timeout=20, what="running")
    row = await harness.row("hana")
    assert row is not None
    assert _environ(row.state["pid"])["HOOKED"] == "pre-hana"  # the process the hook's spec started
    assert json.loads((tmp_path / "env-hana.json").read_text())["HOOKED"] == "pre-hana"  # as the server sees it
    assert _calls(log) == [], "no post-stop call while the server runs"

    await harness.bus.publish(StopServer(user="hana", spawn_id=cmd.spawn_id, reason="culler"))
    await wait_for(lambda: _is(harness.status("hana"), "stopped"), what="stopped")
    await wait_for(lambda: _called(log, cmd.spawn_id), what="post_stop_hook called")
    await asyncio.sleep(1.0)  # a second call would come by now
    [call] = _calls(log)
    assert call == {"user": "hana", "server_name": "", "spawn_id": cmd.spawn_id, "state": row.state,
                    "reason": "culler", "message": None}


async def test_a_refusing_pre_spawn_hook_fails_the_spawn_with_its_message(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "hooks.jsonl"
    _start_worker(harness, log, pre_spawn_hook=f"{HOOKS}:refuse")
    refused = spawn_cmd("refused-ivy")
    await harness.spawn(refused)
    await wait_for(lambda: _is(harness.status("refused-ivy"), "failed"), timeout=20, what="failed")
    row = await harness.row("refused-ivy")
    assert row is not None and row.message == "refused-ivy has used up this month's compute quota"
    assert row.state == {}, "nothing was planned nor started"
    await wait_for(lambda: _has_event(harness, ServerFailed, refused.spawn_id), what="ServerFailed event")
    await wait_for(lambda: _called(log, refused.spawn_id), what="post_stop_hook called for the failure")
    assert _calls(log)[0]["reason"] == "failed" and "compute quota" in _calls(log)[0]["message"]

    ok = spawn_cmd("jane")  # the hook returns None for her: the spawn goes on unchanged
    await harness.spawn(ok)
    await wait_for(lambda: _is(harness.status("jane"), "running"), timeout=20, what="running")
    assert "HOOKED" not in json.loads((tmp_path / "env-jane.json").read_text())


async def test_post_stop_hook_on_exit_and_its_failure_never_blocks(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "hooks.jsonl"
    _start_worker(harness, log)
    cmd = spawn_cmd("crash-kim")  # record_stop raises for her, after recording the call
    await harness.spawn(cmd)
    await wait_for(lambda: _is(harness.status("crash-kim"), "running"), timeout=20, what="running")
    row = await harness.row("crash-kim")
    assert row is not None
    os.killpg(row.state["pid"], signal.SIGKILL)
    await wait_for(lambda: _is(harness.status("crash-kim"), "stopped"), timeout=10, what="noticed exit")
    await wait_for(lambda: _called(log, cmd.spawn_id), what="post_stop_hook called")
    [call] = _calls(log)
    assert call["reason"] == "exited" and call["state"] == row.state
    await wait_for(lambda: _logged(harness, "post_stop_hook tests.support.spawn_hooks:record_stop failed"),
                   what="the hook's failure in the worker's log")

    again = spawn_cmd("crash-kim")  # the worker goes on
    await harness.spawn(again)
    await wait_for(lambda: _is(harness.status("crash-kim"), "running"), timeout=20, what="running again")


async def _logged(h: Harness, text: str) -> bool:
    return text in h.cluster.logs()
