"""Commands go to the workers of the backend a spawn's profile chose, and only they adopt its servers.

Two backends on one hub, each served by its own worker process: `local`, and the same class named by import
path (a second backend as a third party would add one). Real processes, NATS and PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fleethub.shared.bus import Bus
from fleethub.shared.bus.permissions import LEGACY_SPAWNER_DURABLE, spawner_durable
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import ServerState
from fleethub.shared.events import commands_filter
from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for

pytestmark = pytest.mark.integration

OTHER = "fleethub.services.spawner.backends.local:LocalBackend"
PROFILES = [
    {"display_name": "Here", "slug": "here", "default": True, "backend": "local"},
    {"display_name": "There", "slug": "there", "backend": OTHER,
     "overrides": {"environment": {"WHERE": "there"}, "mem_limit": "1G"}},
    {"display_name": "Boxed", "slug": "boxed", "backend": "docker",
     "overrides": {"docker": {"image": "base:1", "allowed_images": {"Base": "base:1", "Science": "sci:2"}}}},
]


class Stack:
    def __init__(self, cluster: Cluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.tmp = tmp_path
        s = cluster.settings
        self.api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.proxy.port}/hub/api", timeout=30)
        self.engine = make_engine(s.require_database_url(), pool_size=1)
        self.sessions = make_sessionmaker(self.engine)
        self.tokens: dict[str, str] = {}

    def worker(self, backend: str) -> Any:
        return self.cluster.start("spawner", log_name=f"spawner-{backend.split(':')[0]}",
                                  spawner={"backends": [backend]})

    async def token(self, user: str) -> dict[str, str]:
        if user not in self.tokens:
            await ensure_user(self.cluster.settings, user)
            self.tokens[user] = mint_token(self.cluster.settings, user)
        return {"Authorization": f"token {self.tokens[user]}"}

    async def start(self, user: str, options: dict[str, Any]) -> httpx.Response:
        return await self.api.post(f"/users/{user}/server", json=options, headers=await self.token(user))

    async def row(self, user: str) -> ServerState | None:
        async with self.sessions() as s:
            return (await s.execute(select(ServerState).where(ServerState.user_name == user))).scalar()

    async def status(self, user: str) -> str | None:
        row = await self.row(user)
        return row.status if row else None

    async def model(self, user: str) -> dict[str, Any]:
        r = await self.api.get(f"/users/{user}", headers=await self.token(user))
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture
async def stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Stack]:
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
        api={"slow_spawn_timeout": 0.5},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 2, "profiles": PROFILES,
                 "environment": {"FAKE_ENV_DUMP": str(tmp_path / "env-{username}.json")}},
        proxy={"port": free_port()},
    ) as cluster:
        stack = Stack(cluster, tmp_path)
        try:
            await cluster.wait_hub()
            yield stack
        finally:
            await stack.api.aclose()
            await stack.engine.dispose()


async def test_each_backend_is_served_by_its_own_workers(stack: Stack) -> None:
    s = stack.cluster.settings
    # a deployment of the version before: one durable for every command (its filter would overlap ours)
    bus = Bus(s.nats_url, s.nats_namespace, "test")
    await bus.connect()
    try:
        await bus.ensure_topology()
        sub = await bus.js.pull_subscribe(commands_filter(s.nats_namespace), durable=LEGACY_SPAWNER_DURABLE,
                                          stream=bus.names.cmd_stream)
        await sub.unsubscribe()
        stack.worker("local")
        other = stack.worker(OTHER)

        async def durables() -> set[str]:
            return {c.name for c in await bus.js.consumers_info(bus.names.cmd_stream)}

        await wait_for(lambda: _has(durables, {spawner_durable("local"), spawner_durable(OTHER)}), timeout=30,
                       what=f"one durable per backend\n{stack.cluster.logs()}")
        assert LEGACY_SPAWNER_DURABLE not in await durables()
    finally:
        await bus.close()

    # each profile's spawn runs on its backend, with its settings
    assert (await stack.start("alice", {"profile": "there"})).status_code in (201, 202)
    assert (await stack.start("carol", {})).status_code in (201, 202)  # the default profile: local
    for user in ("alice", "carol"):
        await wait_for(lambda u=user: _is(stack.status(u), "running"), timeout=30,  # type: ignore[misc]
                       what=f"{user} running\n{stack.cluster.logs()}")
    alice, carol = await stack.row("alice"), await stack.row("carol")
    assert alice is not None and carol is not None
    assert (alice.backend, carol.backend) == (OTHER, "local")
    assert alice.worker_id != carol.worker_id
    env = json.loads((stack.tmp / "env-alice.json").read_text())
    assert env["WHERE"] == "there" and env["MEM_LIMIT"] == str(1024**3)
    assert "WHERE" not in json.loads((stack.tmp / "env-carol.json").read_text())
    assert (await stack.model("alice"))["servers"][""]["user_options"] == {"profile": "there"}

    # the other backend's only worker dies: its spawns wait, the local worker neither takes its commands
    # nor adopts its running server
    other.send_signal(signal.SIGKILL)
    other.wait()
    assert (await stack.start("bob", {"profile": "there"})).status_code == 202
    assert (await stack.start("dave", {"profile": "here"})).status_code in (201, 202)
    await wait_for(lambda: _is(stack.status("dave"), "running"), timeout=30, what="dave running (local)")
    await wait_for(lambda: _expired(stack, "alice"), timeout=10, what="alice's lease expired")
    for _ in range(3):  # a few adoption passes of the local worker
        await wait_for(lambda: _is(stack.status("dave"), "running"), timeout=2)
    alice_now = await stack.row("alice")
    assert alice_now is not None and alice_now.worker_id == alice.worker_id, "adopted by a worker of another backend"
    assert await stack.status("bob") is None, "a command of another backend was taken"

    # a worker of that backend comes back: it takes the waiting spawn and adopts the running server
    stack.worker(OTHER)
    await wait_for(lambda: _is(stack.status("bob"), "running"), timeout=30, what=f"bob running\n{stack.cluster.logs()}")
    await wait_for(lambda: _adopted(stack, "alice", alice.worker_id), timeout=30, what="alice adopted")
    assert (await stack.row("alice")).status == "running"  # type: ignore[union-attr]

    # stops go to the backend running the server
    r = await stack.api.delete("/users/alice/server", headers=await stack.token("alice"))
    assert r.status_code in (202, 204), r.text
    await wait_for(lambda: _is(stack.status("alice"), "stopped"), timeout=30, what="alice stopped")


async def test_the_api_refuses_options_no_profile_takes(stack: Stack) -> None:
    unknown = await stack.start("erin", {"profile": "huge"})
    assert unknown.status_code == 400
    assert "unknown profile 'huge'" in unknown.json()["message"] and "here, there, boxed" in unknown.json()["message"]
    image = await stack.start("erin", {"profile": "boxed", "image": "evil:latest"})
    assert image.status_code == 400 and "image 'evil:latest' is not allowed" in image.json()["message"]
    wrong = await stack.start("erin", {"profile": 7})
    assert wrong.status_code == 400 and "profile must be a string" in wrong.json()["message"]
    assert await stack.status("erin") is None
    assert (await stack.model("erin"))["servers"] == {}
    # an allowed image, by its display name: accepted and recorded (no docker worker runs: it waits)
    ok = await stack.start("erin", {"profile": "boxed", "image": "Science"})
    assert ok.status_code == 202, ok.text
    assert (await stack.model("erin"))["servers"][""]["user_options"] == {"profile": "boxed", "image": "Science"}


async def _has(durables: Any, wanted: set[str]) -> bool:
    return wanted <= await durables()


async def _is(status: Any, wanted: str) -> bool:
    return bool(await status == wanted)


async def _expired(stack: Stack, user: str) -> bool:
    async with stack.sessions() as s:
        from sqlalchemy import func

        row = (await s.execute(select(ServerState.lease_expires < func.now())
                               .where(ServerState.user_name == user))).scalar()
    return bool(row)


async def _adopted(stack: Stack, user: str, old_worker: str | None) -> bool:
    row = await stack.row(user)
    return row is not None and row.worker_id not in (None, old_worker)
