"""The spawn progress stream (`/users/{name}/server[s/{server_name}]/progress`): JupyterHub's event
format, the spawner's events relayed from the bus, exactly one terminal event, keep-alives, and the end
of the stream when the client goes away. No spawner runs: the tests publish its events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from fleethub.services.api import progress, queries
from fleethub.shared.events import ServerFailed, ServerProgress, ServerReady, ServerStopped, SpawnServer
from fleethub.shared.service import bind_socket
from tests.support.cluster import wait_for
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.spawns import Streamed, mark, replica

pytestmark = pytest.mark.integration

REQUESTED = {"progress": 0, "message": "Server requested"}
READY = {"progress": 100, "ready": True, "message": "Server ready at /user/bob/",
         "html_message": 'Server ready at <a href="/user/bob/">/user/bob/</a>', "url": "/user/bob/"}
PROGRESS = "/hub/api/users/bob/server/progress"


async def _pending(hub: Hub, user: str = "bob", server: str = "") -> tuple[dict[str, str], SpawnServer]:
    headers = await hub.headers_for(user)
    path = f"/hub/api/users/{user}/" + (f"servers/{server}" if server else "server")
    assert (await hub.client.post(path, headers=headers)).status_code == 202
    return headers, await hub.spawn_command()


def _events(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(part[len(b"data: "):]) for part in body.split(b"\n\n") if part.startswith(b"data: ")]


async def test_a_spawn_from_request_to_ready(hub: Hub) -> None:
    bob, cmd = await _pending(hub)
    async with replica(hub) as (app, state, _):
        stream = Streamed(app, PROGRESS, bob)
        assert await stream.start() == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache"
        assert "content-length" not in stream.headers and stream.headers["x-jupyterhub-version"]
        assert await stream.chunk() == b'data: {"progress": 0, "message": "Server requested"}\n\n'
        # the spawner's own first step is not repeated; its others follow in order
        for pct, text in ((0, "Server requested"), (50, "Spawning server..."), (75, "Pulling image")):
            await hub.bus.publish(ServerProgress(user="bob", spawn_id=cmd.spawn_id, progress=pct, message=text))
        assert await stream.event() == {"progress": 50, "message": "Spawning server..."}
        assert await stream.event() == {"progress": 75, "message": "Pulling image"}
        await hub.bus.publish(ServerProgress(user="bob", spawn_id="another-spawn", progress=80, message="not mine"))
        await mark(hub, "bob", "", cmd.spawn_id, "running")
        await hub.bus.publish(ServerReady(user="bob", spawn_id=cmd.spawn_id, url="/user/bob/", target="http://x:1"))
        assert await stream.event() == READY
        assert await stream.event() is None and stream.ended  # exactly one terminal event, then the end
        await asyncio.wait_for(stream.task, 5)
        assert state["waiters"].listening == 0
    # once ready: only the ready event
    r = await hub.client.get(PROGRESS, headers=bob)
    assert r.status_code == 200 and r.content == f"data: {json.dumps(READY)}\n\n".encode()


async def test_failed_and_cancelled_spawns(hub: Hub) -> None:
    bob, cmd = await _pending(hub)
    async with replica(hub) as (app, _, _):
        stream = Streamed(app, PROGRESS, bob)
        await stream.start()
        assert await stream.event() == REQUESTED
        await mark(hub, "bob", "", cmd.spawn_id, "failed", "image not found", started=False)
        await hub.bus.publish(ServerFailed(user="bob", spawn_id=cmd.spawn_id, message="image not found"))
        failed = {"progress": 100, "failed": True, "message": "Spawn failed: image not found"}
        assert await stream.event() == failed and await stream.event() is None
        # a failure stays visible until the next spawn
        r = await hub.client.get(PROGRESS, headers=bob)
        assert r.status_code == 200 and _events(r.content) == [failed]

        bob, cmd = await _pending(hub)
        stream = Streamed(app, PROGRESS, bob)
        await stream.start()
        assert await stream.event() == REQUESTED
        assert (await hub.client.delete("/hub/api/users/bob/server", headers=bob)).status_code == 202
        await mark(hub, "bob", "", cmd.spawn_id, "stopped", started=False)
        await hub.bus.publish(ServerStopped(user="bob", spawn_id=cmd.spawn_id))
        cancelled = {"progress": 100, "failed": True, "message": "Spawn cancelled"}
        assert await stream.event() == cancelled and await stream.event() is None
        assert _events((await hub.client.get(PROGRESS, headers=bob)).content) == [cancelled]


async def test_refusals(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, api={"allow_named_servers": True})
    async with running_hub(settings) as hub:
        c = hub.client
        bob = await hub.headers_for("bob")
        r = await c.get(PROGRESS, headers=bob)  # never started
        assert r.status_code == 400 and r.json()["message"] == "bob's server is not starting..."
        assert (await c.get("/hub/api/users/bob/servers/nope/progress", headers=bob)).status_code == 404
        assert (await c.get("/hub/api/users/bob/servers/a%00b/progress", headers=bob)).status_code == 404
        admin = await hub.headers_for("admin", admin=True)
        assert (await c.get("/hub/api/users/nobody/server/progress", headers=admin)).status_code == 404
        assert (await c.get(PROGRESS)).status_code == 403
        _, cmd = await _pending(hub, "carol", "gpu")
        carol_progress = "/hub/api/users/carol/servers/gpu/progress"
        r = await c.get(carol_progress, headers=bob)  # someone else's server
        assert r.status_code == 404 and r.json()["message"] == "No access to resources or resources not found"
        no_read = await hub.headers_for("carol", scopes=["read:users:name!user=carol"])
        assert (await c.get(carol_progress, headers=no_read)).status_code == 403
        # running, then stopped normally: nothing is starting
        await mark(hub, "carol", "gpu", cmd.spawn_id, "running")
        ready = _events((await c.get(carol_progress, headers=admin)).content)
        assert ready[0]["url"] == "/user/carol/gpu/" and ready[0]["ready"] is True
        await mark(hub, "carol", "gpu", cmd.spawn_id, "stopped")
        r = await c.get(carol_progress, headers=admin)
        assert r.status_code == 400 and r.json()["message"] == "carol's server gpu is not starting..."


async def test_browser_event_source_with_xsrf(hub: Hub) -> None:
    browser = hub.new_client()
    async with browser:
        assert (await hub.login(browser, "alice")).status_code in (302, 303)
        xsrf = hub.xsrf(browser)
        assert (await browser.post("/hub/api/users/alice/server", headers={"X-XSRFToken": xsrf})).status_code == 202
        cmd = await hub.spawn_command()
        await mark(hub, "alice", "", cmd.spawn_id, "running")
        path = "/hub/api/users/alice/server/progress"
        assert (await browser.get(path)).status_code == 403  # a cookie without the XSRF token
        r = await browser.get(f"{path}?_xsrf={xsrf}")
        assert r.status_code == 200 and _events(r.content)[0]["url"] == "/user/alice/"


async def test_subscribed_before_reading_the_state(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    # the outcome lands after the stream read "pending" and before it streams: it must come from the
    # subscription (the database poll is pushed out of the way)
    monkeypatch.setattr(progress, "POLL", 60.0)
    bob, cmd = await _pending(hub)
    read_view = queries.one_server_view

    async def read_then_finish(*args: Any, **kwargs: Any) -> Any:
        view = await read_view(*args, **kwargs)
        await mark(hub, "bob", "", cmd.spawn_id, "running")
        await hub.bus.publish(ServerReady(user="bob", spawn_id=cmd.spawn_id, url="/user/bob/", target="http://x:1"))
        await asyncio.sleep(0.2)  # delivered to the api's subscription meanwhile
        return view

    monkeypatch.setattr(progress, "one_server_view", read_then_finish)
    r = await asyncio.wait_for(hub.client.get(PROGRESS, headers=bob), 10)
    assert _events(r.content) == [REQUESTED, READY]


async def test_an_outcome_missed_on_the_bus_is_found_in_the_database(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "POLL", 0.1)
    bob, cmd = await _pending(hub)
    fetch = asyncio.create_task(hub.client.get(PROGRESS, headers=bob))
    await asyncio.sleep(0.3)
    await mark(hub, "bob", "", cmd.spawn_id, "running")  # no event published
    assert _events((await asyncio.wait_for(fetch, 5)).content) == [REQUESTED, READY]


async def test_keepalives_and_hanging_up(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "KEEPALIVE", 0.1)
    bob, _ = await _pending(hub)
    async with replica(hub) as (app, state, _):
        before = asyncio.all_tasks()
        stream = Streamed(app, PROGRESS, bob)
        await stream.start()
        assert await stream.event() == REQUESTED
        assert [await stream.chunk(), await stream.chunk()] == [b"\n\n", b"\n\n"]
        assert state["waiters"].listening == 1
        # the stream's own queue: the bus consumers' fetches wait on queues of their own, in tasks that come
        # and go all the time, and are not the stream's
        queues = [listener._queue for group in state["waiters"]._listeners.values() for listener in group]
        assert len(queues) == 1
        await stream.hang_up()  # the app returns, its subscription and tasks are gone
        assert state["waiters"].listening == 0

        def ours(task: asyncio.Task[object]) -> bool:
            coro: Any = task.get_coro()
            name = getattr(coro, "__qualname__", "")
            if name == "Queue.get":
                frame = getattr(coro, "cr_frame", None)
                return frame is not None and any(frame.f_locals.get("self") is q for q in queues)
            return name in ("StreamingResponse.stream_response", "_disconnected")

        def left() -> list[asyncio.Task[object]]:
            return [t for t in asyncio.all_tasks() - before if ours(t)]

        # cancelled tasks finish over the next loop iterations (a few under load, not one)
        await wait_for(lambda: asyncio.sleep(0, not left()), timeout=2, interval=0.01,
                       what="the stream's tasks to end")
        # the client went away before anything was sent
        stream = Streamed(app, PROGRESS, bob)
        await stream.hang_up()
        assert state["waiters"].listening == 0


async def test_through_a_real_http_server(hub: Hub) -> None:
    bob, cmd = await _pending(hub)
    async with replica(hub) as (app, state, _):
        sock = bind_socket("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            await wait_for(lambda: asyncio.sleep(0, server.started), timeout=5, what="uvicorn")
            port = sock.getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                async with client.stream("GET", PROGRESS, headers=bob) as r:
                    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
                    first = await r.aiter_raw().__anext__()
                    assert first == b'data: {"progress": 0, "message": "Server requested"}\n\n'
                    assert state["waiters"].listening == 1
                await wait_for(lambda: asyncio.sleep(0, state["waiters"].listening == 0), timeout=5,
                               what="the stream to end after the client closed it")
                # a stream that runs to its end over HTTP
                async with client.stream("GET", PROGRESS, headers=bob) as r:
                    chunks = r.aiter_raw()
                    assert _events(await chunks.__anext__()) == [REQUESTED]
                    await mark(hub, "bob", "", cmd.spawn_id, "running")
                    await hub.bus.publish(ServerReady(user="bob", spawn_id=cmd.spawn_id, url="/user/bob/",
                                                      target="http://x:1"))
                    rest = b"".join([c async for c in chunks])
                    assert _events(rest) == [READY]
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)
            sock.close()
