"""The api's durable consumers: proxies' activity batches, and server events ending a spawn's token."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from fleethub.shared.db.models import ApiToken, Server, User
from fleethub.shared.events import ActivityReported, RouteActivity, ServerFailed, ServerProgress, ServerStopped, utcnow
from fleethub.shared.names import route_key
from fleethub.shared.security import server_token
from tests.support.cluster import wait_for
from tests.support.hub import Hub

pytestmark = pytest.mark.integration


async def _start(hub: Hub, name: str) -> Server:
    assert (await hub.client.post(f"/hub/api/users/{name}/server", headers=await hub.headers_for(name))).status_code \
        == 202
    async with hub.sessions() as s:
        return (await s.execute(select(Server).join(User).where(User.name == name))).scalar_one()


async def _activity(hub: Hub, name: str) -> tuple[object, object]:
    async with hub.sessions() as s:
        row = (await s.execute(select(Server.last_activity, User.last_activity).join(User)
                               .where(User.name == name))).one()
    return row[0], row[1]


async def test_activity_batches_move_last_activity_forward(hub: Hub) -> None:
    await _start(hub, "bob")
    await _start(hub, "dotted.name")
    t = utcnow().replace(microsecond=0)
    await hub.bus.publish(ActivityReported(node="n1", routes=[
        RouteActivity(key=route_key("bob"), last_activity=t, requests=3),
        RouteActivity(key=route_key("dotted.name"), last_activity=t - timedelta(seconds=5), requests=1),
        RouteActivity(key="not.a.user.route", last_activity=t, requests=1),
        RouteActivity(key=route_key("nobody"), last_activity=t, requests=1),
    ]))
    await wait_for(lambda: _seen(hub, "bob", t), what="bob's activity recorded")
    await wait_for(lambda: _seen(hub, "dotted.name", t - timedelta(seconds=5)), what="dotted.name's activity")
    # an older batch (from a slower node) never moves it back
    await hub.bus.publish(ActivityReported(node="n2", routes=[
        RouteActivity(key=route_key("bob"), last_activity=t - timedelta(minutes=5)),
        RouteActivity(key=route_key("dotted.name"), last_activity=t),
    ]))
    await wait_for(lambda: _seen(hub, "dotted.name", t), what="the second batch")
    assert await _activity(hub, "bob") == (t, t)
    model = (await hub.client.get("/hub/api/users/bob", headers=await hub.headers_for("bob"))).json()
    assert model["last_activity"] == t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _seen(hub: Hub, name: str, t: object) -> bool:
    return await _activity(hub, name) == (t, t)


async def test_server_reports_activity_with_its_own_token(hub: Hub) -> None:
    server = await _start(hub, "bob")
    assert server.spawn_id is not None
    srv = {"Authorization": f"token {server_token(hub.secret_key, server.spawn_id)}"}
    now = utcnow().replace(microsecond=0)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    r = await hub.client.post("/hub/api/users/bob/activity", headers=srv,
                              json={"servers": {"": {"last_activity": stamp}}, "last_activity": stamp})
    assert r.status_code == 200 and r.content == b""
    assert await _activity(hub, "bob") == (now, now)
    bad: object
    for bad in ({}, {"last_activity": "yesterday"}, {"last_activity": 5},
                {"servers": {"nope": {"last_activity": stamp}}},
                {"servers": {"": {}}}, {"servers": []}, {"last_activity": "2999-01-01T00:00:00Z"}):
        r = await hub.client.post("/hub/api/users/bob/activity", json=bad, headers=srv)
        assert r.status_code == 400 and r.json()["message"], bad
    r = await hub.client.post("/hub/api/users/alice/activity", json={"last_activity": stamp}, headers=srv)
    assert r.status_code == 404  # a server's token speaks for its own user only


async def test_a_stopped_or_failed_spawn_loses_its_token(hub: Hub) -> None:
    bob, carol = await _start(hub, "bob"), await _start(hub, "carol")

    async def ended(server: Server) -> bool:
        async with hub.sessions() as s:
            token = (await s.execute(select(ApiToken.id).where(ApiToken.spawn_id == server.spawn_id))).first()
            desired = (await s.execute(select(Server.desired).where(Server.id == server.id))).scalar()
        return token is None and desired == "stopped"

    await hub.bus.publish(ServerProgress(user="bob", spawn_id=bob.spawn_id or "", progress=50, message="..."))
    await hub.bus.publish(ServerStopped(user="bob", spawn_id=bob.spawn_id or "", reason="exited"))
    await hub.bus.publish(ServerFailed(user="carol", spawn_id=carol.spawn_id or "", message="boom"))
    await wait_for(lambda: ended(bob), what="bob's server token revoked")
    await wait_for(lambda: ended(carol), what="carol's server token revoked")
    srv = {"Authorization": f"token {server_token(hub.secret_key, bob.spawn_id or '')}"}
    assert await _status(hub, srv, 403)


async def _status(hub: Hub, headers: dict[str, str], status: int) -> bool:
    return (await hub.client.get("/hub/api/user", headers=headers)).status_code == status
