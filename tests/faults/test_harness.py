"""The harness itself: the stack comes up, a server starts and stops, the oracle agrees, and it notices an orphan."""

from __future__ import annotations

import pytest

from tests.support.faultstack import FaultStack

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_stack_runs_a_server_and_the_oracle_agrees(stack: FaultStack) -> None:
    await stack.create_users("alice")
    r = await stack.start_server("alice")
    assert r.status_code in (201, 202), r.text
    await stack.wait_ready("alice")
    snap = await stack.oracle.converged()
    assert list(snap.running) == [("alice", "")]
    for node in range(2):
        assert (await stack.reach("alice", node=node)).json()["user"] == "alice"
    spawn_id = snap.running[("alice", "")]["spawn_id"]
    await stack.events.wait("server.ready", spawn_id=spawn_id)
    r = await stack.stop_server("alice")
    assert r.status_code in (202, 204), r.text
    await stack.wait_stopped("alice")
    await stack.oracle.converged()
