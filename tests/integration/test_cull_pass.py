"""fleethub's culler pass (`cull_once`) against real PostgreSQL and NATS, with the api in-process and the test
playing the spawner: an idle server's stop is requested as the api's is (desired state 'stopped' and one
`StopServer` through the outbox, however many passes or replicas ask), so the REST API shows it stopping at
once; a running server without a `servers` row is still stopped, by a command published directly."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from fleethub.services.culler.app import ActivityView, cull_once
from fleethub.shared.db.models import OutboxMessage, Server, User
from fleethub.shared.events import ServerStopped, StopServer
from fleethub.shared.lifecycle import ServerKey
from fleethub.shared.service import Runtime, open_runtime
from tests.support.cluster import wait_for
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.spawns import mark

pytestmark = pytest.mark.integration


@pytest.fixture
async def hub(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, culler={"timeout": 0.05})
    async with running_hub(settings) as h:
        yield h


@pytest.fixture
async def culler(hub: Hub) -> AsyncIterator[Runtime]:
    async with open_runtime(hub.settings, "culler", pool_size=2) as runtime:
        yield runtime


async def test_a_culled_server_shows_its_stop_pending_and_one_command_goes_out(hub: Hub, culler: Runtime) -> None:
    bob = await hub.headers_for("bob")
    assert (await hub.client.post("/hub/api/users/bob/server", headers=bob)).status_code == 202
    spawn = await hub.spawn_command()
    await mark(hub, "bob", "", spawn.spawn_id, "running")
    await asyncio.sleep(0.1)  # idle past the timeout
    model = (await hub.client.get("/hub/api/users/bob", headers=bob)).json()["servers"][""]
    assert (model["ready"], model["pending"]) == (True, None)

    # two replicas' passes at once, then another pass: the row's condition lets one request through
    passes = await asyncio.gather(cull_once(culler, ActivityView()), cull_once(culler, ActivityView()))
    assert sorted(passes, key=len) == [[], [ServerKey("bob", "")]]
    assert await cull_once(culler, ActivityView()) == []
    async with hub.sessions() as s:
        desired = (await s.execute(select(Server.desired).join(User).where(User.name == "bob"))).scalar_one()
        sent = [json.loads(p)["type"] for p in (await s.execute(select(OutboxMessage.payload))).scalars()]
    assert desired == "stopped" and sent == ["spawn", "stop"]
    # before the spawner acts, the REST API says what JupyterHub's does after its culler's DELETE
    model = (await hub.client.get("/hub/api/users/bob", headers=bob)).json()["servers"][""]
    assert (model["ready"], model["pending"]) == (True, "stop")

    commands = await hub.commands(2, timeout=1)
    assert len(commands) == 1 and isinstance(commands[0], StopServer)
    assert (commands[0].spawn_id, commands[0].reason) == (spawn.spawn_id, "culler")
    await mark(hub, "bob", "", spawn.spawn_id, "stopped")
    await hub.bus.publish(ServerStopped(user="bob", spawn_id=spawn.spawn_id, reason="culler"))

    async def stopped() -> bool:
        return "" not in (await hub.client.get("/hub/api/users/bob", headers=bob)).json()["servers"]

    await wait_for(stopped, timeout=5, what="bob's culled server stopped")


async def test_a_running_server_without_a_servers_row_is_stopped_directly(hub: Hub, culler: Runtime,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    await mark(hub, "ghost", "gpu", "s-ghost", "running")  # no users row, no servers row
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.WARNING, logger="fleethub.services.culler.app"):
        assert await cull_once(culler, ActivityView()) == [ServerKey("ghost", "gpu")]
    assert "has no servers row" in caplog.text
    assert await cull_once(culler, ActivityView()) == [ServerKey("ghost", "gpu")]  # published again...
    commands = await hub.commands(2, timeout=1)  # ...and collapsed on the bus by its message id
    assert len(commands) == 1 and isinstance(commands[0], StopServer)
    assert (commands[0].user, commands[0].server_name, commands[0].spawn_id) == ("ghost", "gpu", "s-ghost")
    async with hub.sessions() as s:
        assert (await s.execute(select(OutboxMessage.id))).scalars().all() == []  # nothing to record it in
