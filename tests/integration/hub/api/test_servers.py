"""Starting and stopping servers: desired state, the server's token and the command in one transaction,
and the answer (201/202/204/400/429/500) as the spawner's events arrive. No spawner runs here: the tests
read commands off the work queue and publish the spawner's events themselves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fleethub.services.api.queries import get_user, one_server_view
from fleethub.services.api.servers import server_ended, start_server
from fleethub.shared.db.models import ApiToken, Server, ServerState, User
from fleethub.shared.events import ServerFailed, ServerReady, ServerStopped, StopServer
from fleethub.shared.lifecycle import Announcer, DesiredState
from fleethub.shared.security import hash_token, server_token
from tests.support.cluster import wait_for
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.spawns import mark

pytestmark = pytest.mark.integration


@dataclass
class Kicks:
    """Counts the relay's wake-ups."""

    kicks: int = 0

    def kick(self) -> None:
        self.kicks += 1


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
    await mark(hub, "bob", "", cmd.spawn_id, "running")
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
        await mark(hub, "bob", "", cmd.spawn_id, "running")
        await hub.bus.publish(ServerReady(user="bob", spawn_id=cmd.spawn_id, url="/user/bob/", target="http://x:1"))
        assert (await asyncio.wait_for(start, 2)).status_code == 201

        stop = asyncio.create_task(c.delete("/hub/api/users/bob/server", headers=bob))
        (cmd_stop,) = await hub.commands(1)
        assert isinstance(cmd_stop, StopServer) and cmd_stop.spawn_id == cmd.spawn_id
        await mark(hub, "bob", "", cmd.spawn_id, "stopped")
        await hub.bus.publish(ServerStopped(user="bob", spawn_id=cmd.spawn_id))
        assert (await asyncio.wait_for(stop, 2)).status_code == 204

        start = asyncio.create_task(c.post("/hub/api/users/bob/server", headers=bob))
        cmd = await hub.spawn_command()
        await mark(hub, "bob", "", cmd.spawn_id, "failed", "image not found")
        await hub.bus.publish(ServerFailed(user="bob", spawn_id=cmd.spawn_id, message="image not found"))
        r = await asyncio.wait_for(start, 2)
        assert r.status_code == 500 and r.json()["message"] == "Spawn failed: image not found"

        # an event missed by the core subscription is caught by the database poll
        start = asyncio.create_task(c.post("/hub/api/users/bob/server", headers=bob))
        cmd = await hub.spawn_command()
        await mark(hub, "bob", "", cmd.spawn_id, "running")
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


async def test_a_stop_repeated_while_the_server_runs_sends_it_again(hub: Hub) -> None:
    c = hub.client
    bob = await hub.headers_for("bob")
    assert (await c.post("/hub/api/users/bob/server", headers=bob)).status_code == 202
    cmd = await hub.spawn_command()
    await mark(hub, "bob", "", cmd.spawn_id, "running")
    for _ in range(2):  # the spawner has not acted yet: desired is stopped, the server still runs
        assert (await c.delete("/hub/api/users/bob/server", headers=bob)).status_code == 202
        (stop,) = await hub.commands(1)
        assert isinstance(stop, StopServer) and stop.spawn_id == cmd.spawn_id
    model = (await c.get("/hub/api/users/bob", headers=bob)).json()["servers"][""]
    assert (model["ready"], model["pending"]) == (True, "stop")


async def test_a_start_decides_on_the_locked_row_as_it_now_is(hub: Hub) -> None:
    # the routes may read a server before they lock it (a named one: does it exist?); what another
    # transaction committed in between (here the api's consumer recording the end of the last spawn) is
    # what the start sees once it holds the row, and what its conditional UPDATE expects
    relay = Kicks()
    announcer = Announcer(hub.settings.nats_namespace, relay, "api")
    await hub.headers_for("bob")
    async with hub.sessions() as s, s.begin():
        user = await get_user(s, "bob")
        s.add(Server(user_id=user.id, name="", desired=DesiredState.RUNNING, spawn_id="s0", user_options={"a": 1}))
    await mark(hub, "bob", "", "s0", "failed")
    async with hub.sessions() as s, s.begin():
        user = await get_user(s, "bob")
        before = await one_server_view(s, user, "")
        assert before is not None and before.server.desired == "running"
        async with hub.sessions() as other, other.begin():
            await server_ended(other, "s0")  # desired → stopped, committed
        result = await start_server(s, hub.settings, hub.secret_key, user, "", None, announcer=announcer)
        assert result.started and relay.kicks == 0
        # the object the session holds is the row as the start left it
        assert (before.server.desired, before.server.spawn_id) == ("running", result.spawn_id)
    assert relay.kicks == 1  # once committed
    cmd = await hub.spawn_command()
    assert cmd.spawn_id == result.spawn_id and cmd.user_options == {"a": 1}  # no options given: the previous ones


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
    from fleethub.shared.events import Route
    from fleethub.shared.names import route_key

    route = Route(routespec="/user/bob/", target="http://127.0.0.1:9", data={"user": "bob", "server_name": ""})
    await hub.bus.routes.put(route_key("bob"), route)
    admin = await hub.headers_for("admin", admin=True)
    r = await hub.client.get("/hub/api/proxy", headers=admin)
    assert r.json() == {"/user/bob/": {"routespec": "/user/bob/", "target": "http://127.0.0.1:9",
                                       "data": {"user": "bob", "server_name": ""}}}
    await hub.bus.routes.delete(route_key("bob"))
    assert (await hub.client.get("/hub/api/proxy", headers=admin)).json() == {}



def _named(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, **api: object) -> Any:
    return running_hub(hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                                    api={"allow_named_servers": True, **api}))


async def _states(hub: Hub, user: str) -> dict[str, tuple[str, str]]:
    async with hub.sessions() as s:
        rows = (await s.execute(select(ServerState).where(ServerState.user_name == user))).scalars()
        return {r.server_name: (r.spawn_id, r.status) for r in rows}


async def test_one_server_model(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    async with _named(tmp_path, nats_url, database_url, nats_namespace) as hub:
        c = hub.client
        bob = await hub.headers_for("bob")
        admin = await hub.headers_for("admin", admin=True)
        for path in ("/hub/api/users/bob/server", "/hub/api/users/bob/servers/"):
            r = await c.get(path, headers=bob)  # every user has a default server, stopped until started
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert r.json() == {
                "name": "", "display_name": "", "full_name": "bob/", "last_activity": None, "started": None,
                "pending": None, "ready": False, "stopped": True, "url": "/user/bob/", "user_options": {},
                "progress_url": "/hub/api/users/bob/server/progress", "full_url": None, "full_progress_url": None,
            }
        r = await c.get("/hub/api/users/bob/servers/gpu", headers=bob)
        assert r.status_code == 404 and r.json()["message"] == "bob has no server named 'gpu'"
        assert (await c.get("/hub/api/users/nobody/server", headers=admin)).status_code == 404
        assert (await c.get("/hub/api/users/bob/server")).status_code == 403
        carol = await hub.headers_for("carol")
        r = await c.get("/hub/api/users/bob/server", headers=carol)
        assert r.status_code == 404 and r.json()["message"] == "No access to resources or resources not found"

        r = await c.post("/hub/api/users/bob/servers/gpu", json={"display_name": "GPU"}, headers=bob)
        assert r.status_code == 202
        cmd = await hub.spawn_command()
        model = (await c.get("/hub/api/users/bob/servers/gpu", headers=bob)).json()
        assert (model["pending"], model["stopped"], model["display_name"]) == ("spawn", False, "GPU")
        assert "state" not in model and model["progress_url"] == "/hub/api/users/bob/servers/gpu/progress"
        await mark(hub, "bob", "gpu", cmd.spawn_id, "running")
        model = (await c.get("/hub/api/users/bob/servers/gpu", headers=admin)).json()
        assert model["ready"] is True and model["started"] is not None and model["state"] == {}
        # a token for one server reads that one only
        gpu_only = await hub.headers_for("bob", scopes=["read:servers!server=bob/gpu"])
        assert (await c.get("/hub/api/users/bob/servers/gpu", headers=gpu_only)).status_code == 200
        assert (await c.get("/hub/api/users/bob/server", headers=gpu_only)).status_code == 404


async def test_create_a_server_without_starting_it(tmp_path: Path, nats_url: str, database_url: str,
                                                   nats_namespace: str) -> None:
    async with _named(tmp_path, nats_url, database_url, nats_namespace, named_server_limit_per_user=3) as hub:
        c = hub.client
        bob = await hub.headers_for("bob")
        r = await c.put("/hub/api/users/bob/servers/gpu", json={"display_name": "My GPU", "user_options": {"a": 1}},
                        headers=bob)
        assert r.status_code == 201
        model = r.json()
        assert (model["name"], model["display_name"], model["user_options"]) == ("gpu", "My GPU", {"a": 1})
        assert (model["stopped"], model["pending"], model["ready"]) == (True, None, False)
        assert await hub.commands(1, timeout=0.3) == []  # nothing starts
        r = await c.put("/hub/api/users/bob/servers/gpu", headers=bob)
        assert r.status_code == 409 and r.json()["message"] == "User bob already has server gpu"
        for path in ("/hub/api/users/bob/server", "/hub/api/users/bob/servers/"):
            r = await c.put(path, headers=bob)
            assert r.status_code == 409 and r.json()["message"] == "User bob already has a default server"
        r = await c.put("/hub/api/users/bob/servers/cpu", json={"size": "s"}, headers=bob)  # 5.x: options alone
        assert r.status_code == 201 and r.json()["user_options"] == {"size": "s"} and r.json()["display_name"] == "cpu"
        for bad in ("GPU", "1gpu", "gpu_x", "a" * 31, "gpu-", "a--b", "has%20space", "gpu%0A", "%C3%A9"):
            r = await c.put(f"/hub/api/users/bob/servers/{bad}", headers=bob)
            assert r.status_code == 400 and "Invalid server name" in r.json()["message"], bad
        for body, message in ((b"{bad", "Invalid JSON in request body"), (b"[1]", "Body must be a JSON object"),
                              (b'{"display_name": 5}', "display_name must be a string"),
                              (b'{"user_options": [1]}', "user_options must be an object or null"),
                              (b'{"display_name": " x"}', "Invalid display_name: ' x'"),
                              (b'{"display_name": "a  b"}', "Invalid display_name: 'a  b'"),
                              (b'{"display_name": "tab\\there"}', "Invalid display_name: 'tab\\there'"),
                              (('{"display_name": "%s"}' % ("x" * 256)).encode(), None)):
            r = await c.put("/hub/api/users/bob/servers/tpu", content=body, headers=bob)
            assert r.status_code == 400 and (message is None or r.json()["message"] == message), body
        r = await c.put("/hub/api/users/bob/servers/tpu", json={"display_name": "Ünïcode TPU ☃"}, headers=bob)
        assert r.status_code == 201 and r.json()["display_name"] == "Ünïcode TPU ☃"
        r = await c.put("/hub/api/users/bob/servers/fourth", headers=bob)
        assert r.status_code == 400 and "maximum of 3 named servers" in r.json()["message"]
        # the stored options are the ones a plain start uses
        assert (await c.post("/hub/api/users/bob/servers/gpu", headers=bob)).status_code == 202
        assert (await hub.spawn_command()).user_options == {"a": 1}
        # permissions
        carol = await hub.headers_for("carol")
        r = await c.put("/hub/api/users/bob/servers/x", headers=carol)
        assert r.status_code == 404 and r.json()["message"] == "No access to resources or resources not found"
        read_only = await hub.headers_for("bob", scopes=["read:servers!user=bob"])
        assert (await c.put("/hub/api/users/bob/servers/x", headers=read_only)).status_code == 403
        admin = await hub.headers_for("admin", admin=True)
        assert (await c.put("/hub/api/users/carol/servers/lab", headers=admin)).status_code == 201
        assert (await c.put("/hub/api/users/nobody/servers/lab", headers=admin)).status_code == 404
        assert (await c.put("/hub/api/users/a%00b/servers/lab", headers=admin)).status_code == 404  # never stored
        r = await c.patch("/hub/api/users/a%00b/server", json={"user_options": {}}, headers=admin)
        assert r.status_code == 404


async def test_named_server_limit_under_concurrent_creates(tmp_path: Path, nats_url: str, database_url: str,
                                                           nats_namespace: str) -> None:
    async with _named(tmp_path, nats_url, database_url, nats_namespace, named_server_limit_per_user=2) as hub:
        bob = await hub.headers_for("bob")
        creates = [hub.client.put(f"/hub/api/users/bob/servers/s{i}", headers=bob) for i in range(6)]
        starts = [hub.client.post(f"/hub/api/users/bob/servers/t{i}", headers=bob) for i in range(4)]
        answers = [r.status_code for r in await asyncio.gather(*creates, *starts)]
        assert len([a for a in answers if a in (201, 202)]) == 2 and answers.count(400) == 8, answers
        model = (await hub.client.get("/hub/api/users/bob?include_stopped_servers=1", headers=bob)).json()
        assert len([n for n in model["servers"] if n]) == 2


async def test_named_servers_disabled(hub: Hub) -> None:
    bob = await hub.headers_for("bob")
    r = await hub.client.put("/hub/api/users/bob/servers/gpu", headers=bob)
    assert r.status_code == 400 and r.json()["message"] == "Named servers are not enabled."
    for body in ({"name": "gpu"}, {"display_name": "Main"}):
        r = await hub.client.patch("/hub/api/users/bob/server", json=body, headers=bob)
        assert r.status_code == 400 and r.json()["message"] == "Named servers are not enabled."
    r = await hub.client.patch("/hub/api/users/bob/server", json={"user_options": {"a": 1}}, headers=bob)
    assert r.status_code == 200 and r.json()["user_options"] == {"a": 1}


async def test_edit_a_stopped_server(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    async with _named(tmp_path, nats_url, database_url, nats_namespace) as hub:
        c = hub.client
        bob = await hub.headers_for("bob")
        assert (await c.put("/hub/api/users/bob/servers/gpu", headers=bob)).status_code == 201
        r = await c.patch("/hub/api/users/bob/servers/gpu", json={"display_name": "Big GPU", "user_options": {"n": 2}},
                          headers=bob)
        assert r.status_code == 200 and (r.json()["display_name"], r.json()["user_options"]) == ("Big GPU", {"n": 2})
        r = await c.patch("/hub/api/users/bob/servers/gpu", json={"name": "cuda"}, headers=bob)
        assert r.status_code == 200
        assert (r.json()["name"], r.json()["url"], r.json()["display_name"]) == ("cuda", "/user/bob/cuda/", "Big GPU")
        assert (await c.get("/hub/api/users/bob/servers/gpu", headers=bob)).status_code == 404
        assert (await c.get("/hub/api/users/bob/servers/cuda", headers=bob)).json()["user_options"] == {"n": 2}
        assert (await c.put("/hub/api/users/bob/servers/tpu", headers=bob)).status_code == 201
        for body, status, message in (
            (b"", 400, "Must specify at least one field to modify."), (b"{}", 400, None), (b"{bad", 400, None),
            (b"[1]", 400, "Body must be a JSON object"), (b'{"name": 1}', 400, "name must be a string"),
            (b'{"display_name": []}', 400, "display_name must be a string"),
            (b'{"user_options": [1]}', 400, "user_options must be a dict"),
            (b'{"admin": true}', 400, "Unexpected fields: admin; supported fields: name, display_name, user_options"),
            (b'{"name": "Bad_Name"}', 400, None), (b'{"display_name": " pad"}', 400, None),
            (b'{"name": "tpu"}', 409, "User bob already has server 'tpu'"), (b'{"name": "cuda"}', 409, None),
            (b'{"name": ""}', 409, None),
        ):
            r = await c.patch("/hub/api/users/bob/servers/cuda", content=body, headers=bob)
            assert r.status_code == status and (message is None or r.json()["message"] == message), body
        r = await c.patch("/hub/api/users/bob/servers/nope", json={"display_name": "x"}, headers=bob)
        assert r.status_code == 404 and r.json()["message"] == "User bob has no such server nope"
        carol = await hub.headers_for("carol")
        assert (await c.patch("/hub/api/users/bob/servers/cuda", json={"name": "x"}, headers=carol)).status_code == 404
        # the default server can be renamed: it becomes a named server, and a new default server exists
        assert (await c.patch("/hub/api/users/bob/server", json={"name": "main"}, headers=bob)).status_code == 200
        assert (await c.get("/hub/api/users/bob/servers/main", headers=bob)).status_code == 200
        assert (await c.get("/hub/api/users/bob/server", headers=bob)).json()["stopped"] is True


async def test_only_settled_servers_are_renamed(tmp_path: Path, nats_url: str, database_url: str,
                                                nats_namespace: str) -> None:
    async with _named(tmp_path, nats_url, database_url, nats_namespace) as hub:
        c = hub.client
        bob = await hub.headers_for("bob")
        rename = "/hub/api/users/bob/servers/gpu"
        assert (await c.post(rename, headers=bob)).status_code == 202
        cmd = await hub.spawn_command()
        r = await c.patch(rename, json={"name": "cuda"}, headers=bob)  # requested
        assert r.status_code == 400
        assert r.json()["message"] == "bob's server gpu is active. Please stop it before modifying it."
        await mark(hub, "bob", "gpu", cmd.spawn_id, "running")
        assert (await c.patch(rename, json={"display_name": "x"}, headers=bob)).status_code == 400  # running
        assert (await c.delete(rename, headers=bob)).status_code == 202
        assert isinstance((await hub.commands(1))[0], StopServer)
        assert (await c.patch(rename, json={"name": "cuda"}, headers=bob)).status_code == 400  # stopping
        await mark(hub, "bob", "gpu", cmd.spawn_id, "stopped")
        # a row left under the new name by a removed server goes; the server's own row moves with it
        await mark(hub, "bob", "cuda", "an-old-spawn", "stopped")
        r = await c.patch(rename, json={"name": "cuda"}, headers=bob)
        assert r.status_code == 200 and r.json()["stopped"] is True
        assert await _states(hub, "bob") == {"cuda": (cmd.spawn_id, "stopped")}

        # stopped before the spawner took the spawn: not renamed until the spawner recorded its end
        assert (await c.post("/hub/api/users/bob/servers/cuda", headers=bob)).status_code == 202
        cmd = await hub.spawn_command()
        assert (await c.delete("/hub/api/users/bob/servers/cuda", headers=bob)).status_code == 202
        r = await c.patch("/hub/api/users/bob/servers/cuda", json={"name": "gpu"}, headers=bob)
        assert r.status_code == 400 and "start or stop in progress" in r.json()["message"]
        await mark(hub, "bob", "cuda", cmd.spawn_id, "stopped", started=False)  # the spawner's tombstone
        # a removed server still stopping under the wanted name
        await mark(hub, "bob", "gpu", "an-older-spawn", "stopping")
        r = await c.patch("/hub/api/users/bob/servers/cuda", json={"name": "gpu"}, headers=bob)
        assert r.status_code == 409 and "still stopping" in r.json()["message"]
        await mark(hub, "bob", "gpu", "an-older-spawn", "stopped")
        assert (await c.patch("/hub/api/users/bob/servers/cuda", json={"name": "gpu"}, headers=bob)).status_code == 200
        assert await _states(hub, "bob") == {"gpu": (cmd.spawn_id, "stopped")}


async def test_start_sets_the_display_name(tmp_path: Path, nats_url: str, database_url: str,
                                           nats_namespace: str) -> None:
    async with _named(tmp_path, nats_url, database_url, nats_namespace) as hub:
        c = hub.client
        bob = await hub.headers_for("bob")
        r = await c.post("/hub/api/users/bob/servers/gpu", json={"display_name": "  two  spaces"}, headers=bob)
        assert r.status_code == 400 and r.json()["message"].startswith("Invalid display_name")
        assert (await c.post("/hub/api/users/bob/servers/gpu", headers=bob)).status_code == 202
        assert (await c.get("/hub/api/users/bob/servers/gpu", headers=bob)).json()["display_name"] == "gpu"
        r = await c.post("/hub/api/users/bob/server", json={"display_name": "Main"}, headers=bob)
        assert r.status_code == 202
        model = (await c.get("/hub/api/users/bob", headers=bob)).json()["servers"]
        assert model[""]["display_name"] == "" and model["gpu"]["display_name"] == "gpu"


async def test_admin_access_is_a_no_op(hub: Hub) -> None:
    c = hub.client
    bob = await hub.headers_for("bob")
    r = await c.post("/hub/api/users/bob/admin-access", headers=bob)
    assert r.status_code == 200 and r.content == b""
    r = await c.post("/hub/api/users/carol/admin-access", headers=bob)
    assert r.status_code == 404 and r.json()["message"] == "No access to resources or resources not found"
    admin = await hub.headers_for("admin", admin=True)
    assert (await c.post("/hub/api/users/nobody/admin-access", headers=admin)).status_code == 404
    read_only = await hub.headers_for("bob", scopes=["read:servers!user=bob"])
    assert (await c.post("/hub/api/users/bob/admin-access", headers=read_only)).status_code == 403
    assert (await c.post("/hub/api/users/bob/admin-access")).status_code == 403


async def test_shares_follow_a_rename(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    async with _named(tmp_path, nats_url, database_url, nats_namespace) as hub:
        c = hub.client
        bob, carol = await hub.headers_for("bob"), await hub.headers_for("carol")
        assert (await c.put("/hub/api/users/bob/servers/gpu", headers=bob)).status_code == 201
        admin = await hub.headers_for("admin", admin=True)  # a user may not name other users to share with
        assert (await c.post("/hub/api/shares/bob/gpu", json={"user": "carol"}, headers=admin)).status_code == 200
        code = await c.post("/hub/api/share-codes/bob/gpu", json={}, headers=admin)
        assert code.status_code == 200 and code.json()["scopes"] == ["access:servers!server=bob/gpu"]

        async def carol_holds(scope: str) -> bool:
            return scope in (await c.get("/hub/api/user", headers=carol)).json()["scopes"]

        await wait_for(lambda: carol_holds("access:servers!server=bob/gpu"), timeout=5, what="the share")
        assert (await c.patch("/hub/api/users/bob/servers/gpu", json={"name": "cuda"}, headers=bob)).status_code == 200
        # every replica forgets carol's cached scopes: she holds the renamed server, not the old name
        await wait_for(lambda: carol_holds("access:servers!server=bob/cuda"), timeout=5, what="the renamed share")
        assert not await carol_holds("access:servers!server=bob/gpu")
        shares = (await c.get("/hub/api/shares/bob/cuda", headers=bob)).json()["items"]
        assert [s["scopes"] for s in shares] == [["access:servers!server=bob/cuda"]]
        codes = (await c.get("/hub/api/share-codes/bob/cuda", headers=bob)).json()["items"]
        assert [s["scopes"] for s in codes] == [["access:servers!server=bob/cuda"]]
        # a new server under the old name is not shared
        assert (await c.put("/hub/api/users/bob/servers/gpu", headers=bob)).status_code == 201
        assert (await c.get("/hub/api/shares/bob/gpu", headers=bob)).json()["items"] == []
