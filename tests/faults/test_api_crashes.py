"""F1, F2: an api replica killed (kill -9) in the middle of a start request.

F1 dies after the desired state and the command are committed (the outbox row), before anything is
published: the command must still go out (another replica's relay, or the same replica once restarted),
once. F2 dies after the command is published, before it answers: the client's retry must join the same
spawn (201/202 while it is pending, 400 "already running" once it runs), never start a second one.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from fleethub.shared.net import free_port
from fleethub.shared.settings import FAULT_VAR
from tests.support.cluster import wait_for
from tests.support.faultstack import FaultStack, T, fault_stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def crash_at(point: str) -> dict[str, str]:
    return {FAULT_VAR: f"{point}:kill"}


async def _post_dies(stack: FaultStack, via: object, user: str) -> None:
    """The POST to the crashing replica gets no answer (the connection breaks)."""
    with pytest.raises(httpx.HTTPError):
        r = await stack.start_server(user, via=via)  # type: ignore[arg-type]
        raise AssertionError(f"the replica answered {r.status_code} {r.text}")


async def _one_spawn(stack: FaultStack, user: str) -> str:
    """The server is ready under exactly one spawn id: in events, in the database, announced ready once."""
    model = await stack.wait_ready(user)
    state = await stack.server_state(user)
    assert state is not None and state["status"] == "running", state
    spawn_id = state["spawn_id"]
    await stack.events.wait("server.ready", spawn_id=spawn_id)
    assert stack.events.spawn_ids(user) == [spawn_id]
    assert stack.events.ready_counts()[spawn_id] == 1
    assert model["ready"] and not model["pending"], model
    return str(spawn_id)


async def test_f1_api_killed_after_commit_another_replica_publishes(stack: FaultStack) -> None:
    await stack.create_users("alice")
    crashy = stack.start("api", extra_env=crash_at("api.after_commit_before_publish"), api={"port": free_port()})
    await stack.wait_api(crashy)
    await _post_dies(stack, crashy, "alice")
    assert await crashy.wait_exit() == -9

    # the desired state survived the crash: from the first look on, GET shows a spawn pending, then ready
    seen: list[tuple[object, object]] = []

    async def ready() -> bool:
        model = await stack.server_model("alice") or {}
        seen.append((model.get("pending"), model.get("ready")))
        return bool(model.get("ready"))

    await wait_for(ready, timeout=T, interval=0.05, what="alice ready after the api crash")
    assert set(seen) <= {("spawn", False), (None, True)}, seen
    await _one_spawn(stack, "alice")
    await stack.oracle.converged()


async def test_f1_the_restarted_replica_publishes_its_outbox(tmp_path: Path, nats_url: str, database_url: str,
                                                            nats_namespace: str) -> None:
    # the only api replica dies after the commit: nothing can publish until it is back
    async with fault_stack(tmp_path, nats_url, database_url, nats_namespace, apis=0, wait=False,
                           api={"port": free_port()}) as stack:
        api = stack.start("api", extra_env=crash_at("api.after_commit_before_publish"))
        await stack.wait_up()
        await stack.create_users("alice")
        await _post_dies(stack, api, "alice")
        assert await api.wait_exit() == -9
        async with stack.engine.connect() as conn:
            unpublished = (await conn.execute(text(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL "
                "AND subject LIKE '%.cmd.local.spawn.%'"))).scalar()
        assert unpublished == 1
        assert await stack.server_state("alice") is None  # no worker has heard of it

        api.restart()
        await stack.cluster.wait_hub()
        await _one_spawn(stack, "alice")
        await stack.oracle.converged()


async def test_f2_api_killed_before_reply_the_retry_finds_the_same_spawn(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    # a server that takes 2 s to listen; the crashing replica answers after 0.5 s — but dies first
    async with fault_stack(tmp_path, nats_url, database_url, nats_namespace,
                           spawner={"environment": {"FAKE_START_DELAY": "2"}}) as stack:
        await stack.create_users("alice")
        crashy = stack.start("api", extra_env=crash_at("api.after_publish_before_reply"),
                             api={"port": free_port(), "slow_spawn_timeout": 0.5})
        await stack.wait_api(crashy)
        await _post_dies(stack, crashy, "alice")
        assert await crashy.wait_exit() == -9

        # the client retries, through the proxy (another replica): it joins the spawn in flight (201 once
        # ready within slow_spawn_timeout, else 202), as a repeated POST to a pending server does
        retry = await stack.start_server("alice")
        assert retry.status_code in (201, 202), retry.text
        spawn_id = await _one_spawn(stack, "alice")
        again = await stack.start_server("alice")
        assert again.status_code == 400 and "is already running" in again.json()["message"], again.text
        assert (await stack.server_state("alice") or {})["spawn_id"] == spawn_id
        await stack.oracle.converged()
