"""Starting and stopping servers: desired state, the server's token and the command in one transaction,
and the answer (201/202/204/400/429/500) as the spawner's events arrive. No spawner runs here: the tests
read commands off the work queue and publish the spawner's events themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from shared.db.models import ApiToken, Server, ServerState, User
from shared.events import ServerFailed, ServerReady, ServerStopped, StopServer, utcnow
from shared.security import hash_token, server_token
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration


async def _mark(hub: Hub, user: str, server: str, spawn_id: str, status: str, message: str = "") -> None:
    """Write the spawner's actual state, as a worker does before it publishes the event."""
    values = {"spawn_id": spawn_id, "status": status, "message": message, "url": f"/user/{user}/",
              "target": "http://127.0.0.1:1", "started": utcnow()}
    async with hub.sessions() as s, s.begin():
        await s.execute(insert(ServerState).values(user_name=user, server_name=server, **values)
                        .on_conflict_do_update(index_elements=["user_name", "server_name"], set_=values))


async def test_start_records_everything_in_one_transaction(hub: Hub) -> None:
    c = hub.client
    bob = await hub.headers_for("bob")
    r = await c.post("/hub/api/users/bob/server", json={"profile": "small"}, headers=bob)
    assert r.status_code == 202 and r.content == b"" and r.headers["content-type"].startswith("text/plain")
    cmd = await hub.spawn_command()
    assert (cmd.user, cmd.server_name, cmd.user_options) == ("bob", "", {"profile": "small"})
    async with hub.sessions() as s:
        server = (await s.execute(select(Server).join(User).where(User.name == "bob"))).scalar_one()
        token = (await s.execute(select(ApiToken).where(ApiToken.spawn_id == cmd.spawn_id))).scalar_one()
    assert server.desired == "running" and server.spawn_id == cmd.spawn_id and server.requested_at is not None
    # the server's token is derived from the hub key (never on the bus); only its hash is stored
    assert token.kind == "server" and token.note == "Server at /user/bob/"
    assert token.hashed == hash_token(server_token(hub.secret_key, cmd.spawn_id))
    srv = {"Authorization": f"token {server_token(hub.secret_key, cmd.spawn_id)}"}
    me = (await c.get("/hub/api/user", headers=srv)).json()
    assert me["name"] == "bob" and me["scopes"] == ["access:servers!server=bob/", "read:users:activity!user=bob",
                                                    "users:activity!user=bob"]
    for method, path in [("GET", "/hub/api/users"), ("POST", "/hub/api/users/bob/server"),
                         ("POST", "/hub/api/users/bob/tokens")]:
        assert (await c.request(method, path, headers=srv)).status_code == 403, path
    # a second start while pending: 202, nothing new sent; an empty body keeps the options
    assert (await c.post("/hub/api/users/bob/server", headers=bob)).status_code == 202
    assert await hub.commands(1, timeout=0.5) == []
    # once running: 400
    await _mark(hub, "bob", "", cmd.spawn_id, "running")
    r = await c.post("/hub/api/users/bob/server", headers=bob)
    assert r.status_code == 400 and r.json()["message"] == "bob's server is already running"
    model = (await c.get("/hub/api/users/bob", headers=bob)).json()
    assert model["server"] == "/user/bob/" and model["servers"][""]["ready"] is True


async def test_answers_follow_the_spawners_events(tmp_path: Path, nats_url: str, database_url: str,
                                                  nats_namespace: str) -> None:
    # requests wait up to 10 s here; the test plays the spawner, which answers at once
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            api={"slow_spawn_timeout": 10, "slow_stop_timeout": 10})
    async with running_hub(settings) as hub:
        bob = await hub.headers_for("bob")
        c = hub.client
        start = asyncio.create_task(c.post("/hub/api/users/bob/server", headers=bob))
        cmd = await hub.spawn_command()
        await _mark(hub, "bob", "", cmd.spawn_id, "running")
        await hub.bus.publish(ServerReady(user="bob", spawn_id=cmd.spawn_id, url="/user/bob/", target="http://x:1"))
        assert (await asyncio.wait_for(start, 2)).status_code == 201

        stop = asyncio.create_task(c.delete("/hub/api/users/bob/server", headers=bob))
        (cmd_stop,) = await hub.commands(1)
        assert isinstance(cmd_stop, StopServer) and cmd_stop.spawn_id == cmd.spawn_id
        await _mark(hub, "bob", "", cmd.spawn_id, "stopped")
        await hub.bus.publish(ServerStopped(user="bob", spawn_id=cmd.spawn_id))
        assert (await asyncio.wait_for(stop, 2)).status_code == 204

        start = asyncio.create_task(c.post("/hub/api/users/bob/server", headers=bob))
        cmd = await hub.spawn_command()
        await _mark(hub, "bob", "", cmd.spawn_id, "failed", "image not found")
        await hub.bus.publish(ServerFailed(user="bob", spawn_id=cmd.spawn_id, message="image not found"))
        r = await asyncio.wait_for(start, 2)
        assert r.status_code == 500 and r.json()["message"] == "Spawn failed: image not found"

        # an event missed by the core subscription is caught by the database poll
        start = asyncio.create_task(c.post("/hub/api/users/bob/server", headers=bob))
        cmd = await hub.spawn_command()
        await _mark(hub, "bob", "", cmd.spawn_id, "running")
        assert (await asyncio.wait_for(start, 2)).status_code == 201


async def test_stop(hub: Hub) -> None:
    c = hub.client
    bob = await hub.headers_for("bob")
    assert (await c.delete("/hub/api/users/bob/server", headers=bob)).status_code == 204  # nothing to stop
    assert await hub.commands(1, timeout=0.3) == []
    assert (await c.post("/hub/api/users/bob/server", headers=bob)).status_code == 202
    cmd = await hub.spawn_command()
    r = await c.delete("/hub/api/users/bob/server", headers=bob)
    assert r.status_code == 202 and r.headers["content-type"].startswith("text/plain")  # no spawner answers
    (stop,) = await hub.commands(1)
    assert isinstance(stop, StopServer) and stop.spawn_id == cmd.spawn_id
    assert (await c.delete("/hub/api/users/bob/server", headers=bob)).status_code == 204  # already stopped
    r = await c.request("DELETE", "/hub/api/users/bob/server", json={"remove": True}, headers=bob)
    assert r.status_code == 400 and r.json()["message"] == "Cannot delete the default server"
    r = await c.request("DELETE", "/hub/api/users/bob/server", content=b"{bad", headers=bob)
    assert r.status_code == 400


async def test_named_servers_off(hub: Hub) -> None:
    r = await hub.client.post("/hub/api/users/bob/servers/gpu", headers=await hub.headers_for("bob"))
    assert r.status_code == 400 and r.json()["message"] == "Named servers are not enabled."


async def test_named_servers(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            api={"allow_named_servers": True, "named_server_limit_per_user": 2})
    async with running_hub(settings) as hub:
        c = hub.client
        bob = await hub.headers_for("bob")
        for bad in ("GPU", "1gpu", "gpu_x", "a" * 31, "gpu-", "a--b", "has%20space"):
            r = await c.post(f"/hub/api/users/bob/servers/{bad}", headers=bob)
            assert r.status_code == 400 and "Invalid server name" in r.json()["message"], bad
        r = await c.post("/hub/api/users/bob/servers/gpu", json={"user_options": {"gpus": 1}}, headers=bob)
        assert r.status_code == 202
        cmd = await hub.spawn_command()
        assert (cmd.server_name, cmd.user_options) == ("gpu", {"gpus": 1})
        assert (await c.post("/hub/api/users/bob/servers/cpu", headers=bob)).status_code == 202
        r = await c.post("/hub/api/users/bob/servers/third", headers=bob)
        assert r.status_code == 400 and "maximum of 2 named servers" in r.json()["message"]
        model = (await c.get("/hub/api/users/bob", headers=bob)).json()
        assert set(model["servers"]) == {"gpu", "cpu"}
        assert model["servers"]["gpu"]["progress_url"] == "/hub/api/users/bob/servers/gpu/progress"
        assert model["servers"]["gpu"]["url"] == "/user/bob/gpu/"
        assert (await c.delete("/hub/api/users/bob/servers/nope", headers=bob)).status_code == 404
        r = await c.request("DELETE", "/hub/api/users/bob/servers/cpu", json={"remove": True}, headers=bob)
        assert r.status_code == 202
        model = (await c.get("/hub/api/users/bob?include_stopped_servers=1", headers=bob)).json()
        assert set(model["servers"]) == {"gpu"}
        assert (await c.post("/hub/api/users/bob/servers/", headers=bob)).status_code == 202  # "" = default


async def test_spawn_limits_hold_across_the_hub(tmp_path: Path, nats_url: str, database_url: str,
                                                nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            api={"concurrent_spawn_limit": 1, "active_server_limit": 2})
    async with running_hub(settings) as hub:
        c = hub.client
        assert (await c.post("/hub/api/users/u1/server", headers=await hub.headers_for("u1"))).status_code == 202
        r = await c.post("/hub/api/users/u2/server", headers=await hub.headers_for("u2"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and r.json()["status"] == 429
        cmd = await hub.spawn_command()
        await _mark(hub, "u1", "", cmd.spawn_id, "running")  # no longer pending: room for one more spawn
        assert (await c.post("/hub/api/users/u2/server", headers=await hub.headers_for("u2"))).status_code == 202
        cmd = await hub.spawn_command()
        await _mark(hub, "u2", "", cmd.spawn_id, "running")
        r = await c.post("/hub/api/users/u3/server", headers=await hub.headers_for("u3"))
        assert r.status_code == 429 and "Active user limit" in r.json()["message"]


async def test_user_options_forms(hub: Hub) -> None:
    c = hub.client
    bob = await hub.headers_for("bob")
    for body in (b"[1]", b'"x"', b'{"user_options": [1]}'):
        r = await c.post("/hub/api/users/bob/server", content=body, headers=bob)
        assert r.status_code == 400, body
    r = await c.post("/hub/api/users/bob/server", json={"user_options": {"a": 1}, "display_name": "B"}, headers=bob)
    assert r.status_code == 202
    assert (await hub.spawn_command()).user_options == {"a": 1}


async def test_proxy_table(hub: Hub) -> None:
    from shared.events import Route
    from shared.names import route_key

    kv = await hub.bus.routes()
    route = Route(routespec="/user/bob/", target="http://127.0.0.1:9", data={"user": "bob", "server_name": ""})
    await kv.put(route_key("bob"), route.model_dump_json().encode())
    admin = await hub.headers_for("admin", admin=True)
    r = await hub.client.get("/hub/api/proxy", headers=admin)
    assert r.json() == {"/user/bob/": {"routespec": "/user/bob/", "target": "http://127.0.0.1:9",
                                       "data": {"user": "bob", "server_name": ""}}}
    await kv.delete(route_key("bob"))
    assert (await hub.client.get("/hub/api/proxy", headers=admin)).json() == {}

