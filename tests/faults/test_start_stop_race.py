"""F8: a stop requested while the spawn is still pending (on whichever worker holds it).

The stop either cancels the spawn (the worker starting it ends it) or follows it (redelivered until the
spawn is over, then stops what started): never both a stopped record and a live server. While the stop
is in flight a start is refused with a message; at the end the server is stopped, with no process and no
route left, and it can be started again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cluster import wait_for
from tests.support.faultstack import T, fault_stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TERMINAL = {"server.stopped", "server.failed"}


async def test_f8_delete_while_the_spawn_is_pending(tmp_path: Path, nats_url: str, database_url: str,
                                                    nats_namespace: str) -> None:
    # a server that takes 3 s to listen and 1.5 s to exit on SIGTERM; the API answers 202 after 0.3 s
    async with fault_stack(tmp_path, nats_url, database_url, nats_namespace,
                           api={"slow_spawn_timeout": 0.3, "slow_stop_timeout": 0.3},
                           spawner={"environment": {"FAKE_START_DELAY": "3", "FAKE_TERM_DELAY": "1.5"}}) as stack:
        await stack.create_users("alice")
        r = await stack.start_server("alice")
        assert r.status_code == 202, r.text

        async def claimed() -> bool:
            state = await stack.server_state("alice")
            return state is not None and state["status"] == "pending"

        await wait_for(claimed, timeout=T, what="a worker to claim alice's spawn")
        spawn_id = (await stack.server_state("alice") or {})["spawn_id"]

        r = await stack.stop_server("alice", node=1)
        assert r.status_code == 202, r.text
        r = await stack.start_server("alice")
        assert r.status_code == 400, r.text
        assert r.json()["message"] == "alice's server is pending stop, please wait"

        await stack.wait_stopped("alice")
        state = await stack.server_state("alice")
        assert state is not None and state["status"] in ("stopped", "failed"), state
        # cancelled (stopped/failed, never ready) or followed (ready, then stopped): it ends terminal
        await stack.events.wait("server.stopped", spawn_id=spawn_id)
        kinds = [e.type for e in stack.events.of(spawn_id=spawn_id) if e.type != "server.progress"]
        assert kinds in (["server.stopped"], ["server.failed", "server.stopped"], ["server.ready", "server.stopped"],
                         ["server.failed"]), kinds
        print(f"\nF8: the spawn ended {kinds}")
        await stack.oracle.converged()

        # nothing of the cancelled spawn blocks the next one
        r = await stack.start_server("alice")
        assert r.status_code in (201, 202), r.text
        await stack.wait_ready("alice")
        new = (await stack.server_state("alice") or {})["spawn_id"]
        assert new != spawn_id
        await stack.oracle.converged()
