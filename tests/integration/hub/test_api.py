"""The REST API of the walking skeleton: success, permission denials and bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from shared.db.models import ApiToken, Server
from shared.events import ActivityReported, RouteActivity, ServerStopped, SpawnServer, commands_filter, unwrap, utcnow
from shared.security import server_token
from tests.integration.hub.conftest import Hub
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


async def test_version_and_headers(hub: Hub) -> None:
    for path in ("/hub/api/", "/hub/api"):
        r = await hub.client.get(path)
        assert r.status_code == 200 and r.json() == {"version": "5.4.0"}
        assert r.headers["access-control-allow-origin"] == "*"
    for path in ("/hub/api/", "/hub/api/nope", "/hub/api/users"):
        r = await hub.client.get(path)
        assert r.headers["x-jupyterhub-version"] == "5.4.0", path
    r = await hub.client.get("/hub/api/nope")
    assert r.status_code == 404 and r.json()["status"] == 404 and r.headers["content-type"] == "application/json"


async def test_credentials(hub: Hub) -> None:
    r = await hub.client.get("/hub/api/user")
    assert r.status_code == 403 and r.json()["message"] == "Missing or invalid credentials."
    for header in ("token nope", "bearer nope", "Basic abc", "token"):
        r = await hub.client.get("/hub/api/user", headers={"Authorization": header})
        assert r.status_code == 403
    # tokens are not accepted in the URL
    tok = await hub.token_for("alice")
    assert (await hub.client.get(f"/hub/api/user?token={tok}")).status_code == 403
    for scheme in ("token", "Token", "bearer", "BEARER"):
        r = await hub.client.get("/hub/api/user", headers={"Authorization": f"{scheme} {tok}"})
        assert r.status_code == 200 and r.json()["name"] == "alice"
    me = r.json()
    assert me["kind"] == "user" and me["token_id"].startswith("a") and "access:servers!user=alice" in me["scopes"]


async def test_user_crud_and_permissions(hub: Hub) -> None:
    admin = auth(await hub.token_for("admin", admin=True))
    c = hub.client
    r = await c.post("/hub/api/users", json={"usernames": ["bob", "Carol", "bob"]}, headers=admin)
    assert r.status_code == 201 and [u["name"] for u in r.json()] == ["bob", "carol"]
    assert (await c.post("/hub/api/users", json={"usernames": ["bob"]}, headers=admin)).status_code == 409
    assert (await c.post("/hub/api/users/dave", headers=admin)).status_code == 201
    assert (await c.post("/hub/api/users/dave", headers=admin)).status_code == 409
    for bad in ({"usernames": ["a/b"]}, {"usernames": [""]}, {"usernames": []}, {"usernames": "bob"},
                {"usernames": [1]}, {}, [1, 2]):
        r = await c.post("/hub/api/users", json=bad, headers=admin)
        assert r.status_code == 400 and r.json()["message"], (bad, r.text)
    r = await c.post("/hub/api/users", content=b"{not json", headers=admin)
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    # curl -d sends form-encoded by default: the JSON is still read
    r = await c.post("/hub/api/users", content=b'{"usernames": ["erin"]}', headers={**admin,
                     "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 201

    users = (await c.get("/hub/api/users", headers=admin)).json()
    assert {"admin", "bob", "carol", "dave", "erin"} <= {u["name"] for u in users}
    assert (await c.get("/hub/api/users?limit=abc", headers=admin)).status_code == 400
    assert len((await c.get("/hub/api/users?limit=2", headers=admin)).json()) == 2
    bob = (await c.get("/hub/api/users/bob", headers=admin)).json()
    for key in ("kind", "name", "admin", "roles", "groups", "server", "pending", "created", "last_activity", "servers"):
        assert key in bob, key
    assert (await c.get("/hub/api/users/nobody", headers=admin)).status_code == 404

    user = auth(await hub.token_for("bob"))
    assert (await c.get("/hub/api/users", headers=user)).status_code == 403
    assert (await c.get("/hub/api/users/carol", headers=user)).status_code == 404
    assert (await c.get("/hub/api/users/bob", headers=user)).status_code == 200
    assert (await c.post("/hub/api/users", json={"usernames": ["x"]}, headers=user)).status_code == 403
    assert (await c.delete("/hub/api/users/carol", headers=user)).status_code == 403
    assert (await c.post("/hub/api/users/carol/server", headers=user)).status_code == 404

    assert (await c.delete("/hub/api/users/admin", headers=admin)).status_code == 400
    assert (await c.delete("/hub/api/users/carol", headers=admin)).status_code == 204
    assert (await c.get("/hub/api/users/carol", headers=admin)).status_code == 404
    assert (await c.delete("/hub/api/users/carol", headers=admin)).status_code == 404


async def test_tokens(hub: Hub) -> None:
    c = hub.client
    bob = auth(await hub.token_for("bob"))
    r = await c.post("/hub/api/users/bob/tokens", json={"note": "ci", "expires_in": 3600}, headers=bob)
    assert r.status_code == 201
    model = r.json()
    assert model["note"] == "ci" and model["expires_at"] and model["id"].startswith("a") and len(model["token"]) == 32
    assert (await c.get("/hub/api/user", headers=auth(model["token"]))).json()["name"] == "bob"
    async with hub.sessions() as s:
        stored = (await s.execute(select(ApiToken.hashed))).scalars().all()
    assert model["token"] not in stored  # only the hash is kept
    assert (await c.post("/hub/api/users/bob/tokens", json={"expires_in": 1.5}, headers=bob)).status_code == 400
    assert (await c.post("/hub/api/users/bob/tokens", json={"expires_in": "x"}, headers=bob)).status_code == 400
    assert (await c.post("/hub/api/users/bob/tokens", json={"scopes": ["admin:users"]}, headers=bob)).status_code == 400
    await hub.token_for("carol")
    assert (await c.post("/hub/api/users/carol/tokens", headers=bob)).status_code == 404
    r = await c.post("/hub/api/users/bob/tokens", headers=bob)
    assert r.status_code == 201 and r.json()["scopes"] == ["inherit"]


async def _commands(hub: Hub) -> list[Any]:
    sub = await hub.bus.js.pull_subscribe(commands_filter(hub.settings.nats_namespace), durable="test-reader",
                                          stream=hub.bus.names.cmd_stream)
    try:
        msgs = await sub.fetch(10, timeout=2)
    except Exception:
        return []
    out = []
    for m in msgs:
        out.append(unwrap(m.data, "cmd")[1])
        await m.ack()
    return out


async def test_start_and_stop_record_desired_state_and_send_commands(hub: Hub) -> None:
    c = hub.client
    bob_token = await hub.token_for("bob")
    bob = auth(bob_token)
    assert (await c.delete("/hub/api/users/bob/server", headers=bob)).status_code == 204  # nothing running
    r = await c.post("/hub/api/users/bob/server", json={"profile": "small"}, headers=bob)
    assert r.status_code == 202 and r.text == ""  # no spawner in this test
    model = (await c.get("/hub/api/users/bob", headers=bob)).json()
    server = model["servers"][""]
    assert server["pending"] == "spawn" and server["ready"] is False and server["user_options"] == {"profile": "small"}
    # a second start while pending is a 202, and sends nothing new
    assert (await c.post("/hub/api/users/bob/server", headers=bob)).status_code == 202
    cmds = await _commands(hub)
    spawns = [m for m in cmds if isinstance(m, SpawnServer)]
    assert len(spawns) == 1 and spawns[0].user == "bob" and spawns[0].user_options == {"profile": "small"}
    # the server's own token (derived, never on the bus) is recorded as a hash
    async with hub.sessions() as s:
        row = (await s.execute(select(ApiToken).where(ApiToken.spawn_id == spawns[0].spawn_id))).scalar_one()
    assert row.kind == "server"
    srv_token = server_token(__import__("tests.integration.hub.conftest").integration.hub.conftest.__name__ and
                             (await _secret(hub)), spawns[0].spawn_id)
    me = (await c.get("/hub/api/user", headers=auth(srv_token))).json()
    assert me["name"] == "bob" and "access:servers!server=bob/" in me["scopes"]
    assert (await c.get("/hub/api/users", headers=auth(srv_token))).status_code == 403

    # activity from the server's token
    now = utcnow().isoformat().replace("+00:00", "Z")
    r = await c.post("/hub/api/users/bob/activity", json={"servers": {"": {"last_activity": now}}, "last_activity": now},
                     headers=auth(srv_token))
    assert r.status_code == 200
    for bad in ({}, {"last_activity": "yesterday"}, {"servers": {"nope": {"last_activity": now}}},
                {"last_activity": "2999-01-01T00:00:00Z"}):
        assert (await c.post("/hub/api/users/bob/activity", json=bad, headers=auth(srv_token))).status_code == 400

    r = await c.delete("/hub/api/users/bob/server", headers=bob)
    assert r.status_code == 202  # the stop command is out; no spawner answers in this test
    assert (await c.delete("/hub/api/users/bob/server", headers=bob)).status_code in (202, 204)  # repeat: no error
    stops = [m for m in await _commands(hub) if not isinstance(m, SpawnServer)]
    assert stops and stops[0].spawn_id == spawns[0].spawn_id

    # named servers are off by default
    r = await c.post("/hub/api/users/bob/servers/gpu", headers=bob)
    assert r.status_code == 400 and r.json()["message"] == "Named servers are not enabled."


async def _secret(hub: Hub) -> str:
    from shared.db.migrate import load_secret_key

    async with hub.sessions() as s:
        return await load_secret_key(s.bind)  # type: ignore[arg-type]


async def test_spawn_limits_are_hub_wide(hub_settings: Any) -> None:
    from tests.integration.hub.conftest import running_hub

    settings = hub_settings.model_copy(update={"api": hub_settings.api.model_copy(update={"concurrent_spawn_limit": 1})})
    async with running_hub(settings) as hub:
        assert (await hub.client.post("/hub/api/users/u1/server", headers=auth(await hub.token_for("u1")))).status_code == 202
        r = await hub.client.post("/hub/api/users/u2/server", headers=auth(await hub.token_for("u2")))
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


async def test_cookie_requests_need_xsrf(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice", "alice-password")
    # a fetch()-style GET (Sec-Fetch-Mode: cors) without the token is unauthenticated
    assert (await c.get("/hub/api/user", headers={"Sec-Fetch-Mode": "cors"})).status_code == 403
    assert (await c.post("/hub/api/users/alice/server")).status_code == 403
    xsrf = c.cookies.get("_xsrf", path="/hub/")
    assert xsrf
    r = await c.post("/hub/api/users/alice/server", headers={"X-XSRFToken": xsrf})
    assert r.status_code == 202
    # a cross-site form post (non-JSON content type) counts as unauthenticated
    r = await c.post("/hub/api/users/alice/server", data={"a": "b"}, headers={"X-XSRFToken": xsrf})
    assert r.status_code == 403


async def test_stopped_server_urls_answer_like_jupyterhub(hub: Hub) -> None:
    c = hub.client
    alice = auth(await hub.token_for("alice"))
    r = await c.get("/hub/user/alice/api/contents", headers=alice)
    assert r.status_code == 424 and "no longer running" in r.json()["message"]
    await hub.login(c, "alice", "alice-password")
    r = await c.get("/hub/user/alice/lab", headers={"Accept": "text/html"})
    assert r.status_code == 424 and "Start it" in r.text
    assert (await c.get("/hub/user/bob/lab")).status_code == 404
    assert (await c.get("/hub/home")).status_code == 200


async def test_consumers_record_activity_and_revoke_server_tokens(hub: Hub) -> None:
    c = hub.client
    token = await hub.token_for("bob")
    assert (await c.post("/hub/api/users/bob/server", headers=auth(token))).status_code == 202
    async with hub.sessions() as s:
        server = (await s.execute(select(Server).where(Server.name == ""))).scalar_one()
    t = utcnow()
    await hub.bus.publish(ActivityReported(node="n", routes=[RouteActivity(key="user.bob._", last_activity=t, requests=3)]))

    async def recorded() -> bool:
        async with hub.sessions() as s:
            got = (await s.execute(select(Server.last_activity).where(Server.id == server.id))).scalar()
        return got is not None and abs((got - t).total_seconds()) < 0.01

    await wait_for(recorded, what="activity recorded")
    await hub.bus.publish(ServerStopped(user="bob", spawn_id=server.spawn_id, reason="exited"))

    async def revoked() -> bool:
        async with hub.sessions() as s:
            tok = (await s.execute(select(ApiToken).where(ApiToken.spawn_id == server.spawn_id))).scalar()
            desired = (await s.execute(select(Server.desired).where(Server.id == server.id))).scalar()
        return tok is None and desired == "stopped"

    await wait_for(revoked, what="server token revoked")
    await asyncio.sleep(0)
