"""Sharing servers: `/hub/api/shares`, `/hub/api/share-codes`, `/users|groups/{name}/shared`, the
`/hub/accept-share` page, who may do which, bad input, and what a share grants."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from fleethub.shared.db.models import Server, Share, ShareCode, User
from fleethub.shared.events import AccessChanged, Message, utcnow
from fleethub.shared.security import hash_token
from fleethub.shared.settings import ServiceSettings
from tests.support.cluster import wait_for
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
FORM_FIELD = re.compile(r'name="(_xsrf|code|next)" value="([^"]*)"')
HIDDEN = "No access to resources or resources not found"
DENIED = "Action is not authorized with current scopes; requires any of"
SHARE_KEYS = {"server", "scopes", "user", "group", "kind", "created_at"}
CODE_KEYS = {"server", "scopes", "id", "created_at", "expires_at", "exchange_count", "last_exchanged_at"}
# alice may share her own servers, with anyone she can name (JupyterHub's `user` role does not allow it)
SHARER = {"name": "sharer", "scopes": ["shares!user", "read:users:name", "read:groups:name"], "users": ["alice"]}


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, roles=[SHARER])


async def _server(hub: Hub, user: str, name: str = "") -> None:
    """A server record of `user` (created with the user if missing); no spawner runs in these tests."""
    await hub.token_for(user)
    async with hub.sessions() as s, s.begin():
        uid = (await s.execute(select(User.id).where(User.name == user))).scalar_one()
        s.add(Server(user_id=uid, name=name))


async def _share_rows(hub: Hub) -> list[tuple[str | None, list[str]]]:
    async with hub.sessions() as s:
        rows = await s.execute(select(User.name, Share.scopes).outerjoin(User, User.id == Share.user_id)
                               .order_by(Share.id))
        return [(name, scopes) for name, scopes in rows.all()]


def _access(events: list[Message]) -> list[list[str]]:
    # the api's start announces `everyone` (configured roles synced): not about shares
    return [e.users for e in events if isinstance(e, AccessChanged) and not e.everyone]


def _items(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.keys() == {"items", "_pagination"}
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_share_with_a_user(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    bob = await hub.headers_for("bob")
    await _server(hub, "alice", "gpu")
    r = await c.post("/hub/api/shares/alice/gpu", json={"user": "bob"}, headers=admin)
    assert r.status_code == 200, r.text
    share = r.json()
    assert share.keys() == SHARE_KEYS and ISO_Z.match(share["created_at"])
    assert share["server"] == {"name": "gpu", "url": "/user/alice/gpu/", "full_url": None, "ready": False,
                               "user": {"name": "alice"}}
    assert share["scopes"] == ["access:servers!server=alice/gpu"]
    assert (share["user"], share["group"], share["kind"]) == ({"name": "bob"}, None, "user")
    # sharing again adds scopes (the server's filter is added where absent); nothing new changes nothing
    r = await c.post("/hub/api/shares/alice/gpu", json={"user": "bob", "scopes": ["read:servers"]}, headers=admin)
    both = ["access:servers!server=alice/gpu", "read:servers!server=alice/gpu"]
    assert r.status_code == 200 and r.json()["scopes"] == both and r.json()["created_at"] == share["created_at"]
    r = await c.post("/hub/api/shares/alice/gpu", json={"user": "bob", "scopes": ["read:servers!server=alice/gpu"]},
                     headers=admin)
    assert r.json()["scopes"] == both
    assert await _share_rows(hub) == [("bob", both)]

    # the owner's lists (always paginated), the grantee's
    r = await c.get("/hub/api/shares/alice", headers=admin)
    assert r.json()["_pagination"] == {"offset": 0, "limit": 50, "total": 1, "next": None}
    assert [s["scopes"] for s in _items(r)] == [both]
    assert len(_items(await c.get("/hub/api/shares/alice/gpu", headers=admin))) == 1
    assert _items(await c.get("/hub/api/shares/alice/", headers=admin)) == []  # the default server: no shares
    assert _items(await c.get("/hub/api/users/bob/shared", headers=bob))[0]["server"]["name"] == "gpu"
    r = await c.get("/hub/api/users/bob/shared/alice/gpu", headers=bob)
    assert r.status_code == 200 and r.json()["scopes"] == both

    # PATCH revokes the named scopes (filter added as for granting), then the rest
    r = await c.patch("/hub/api/shares/alice/gpu", json={"user": "bob", "scopes": ["read:servers"]}, headers=admin)
    assert r.status_code == 200 and r.json()["scopes"] == both[:1]
    r = await c.patch("/hub/api/shares/alice/gpu", json={"user": "bob", "scopes": ["read:servers"]}, headers=admin)
    assert r.status_code == 200 and r.json()["scopes"] == both[:1]  # nothing to revoke
    for other in ({"user": "nobody"}, {"group": "nogroup"}, {"user": "admin"}):
        r = await c.patch("/hub/api/shares/alice/gpu", json=other, headers=admin)
        assert r.status_code == 200 and r.json() == {}
    r = await c.patch("/hub/api/shares/alice/gpu", json={"user": "bob"}, headers=admin)
    assert r.status_code == 200 and r.json() == {}
    assert _items(await c.get("/hub/api/shares/alice", headers=admin)) == []

    # DELETE revokes every share of the server; the grantee may leave a share
    for name in ("bob", "admin"):
        assert (await c.post("/hub/api/shares/alice/gpu", json={"user": name}, headers=admin)).status_code == 200
    assert (await c.delete("/hub/api/shares/alice/gpu", headers=admin)).status_code == 204
    assert await _share_rows(hub) == []
    assert (await c.delete("/hub/api/shares/alice/", headers=admin)).status_code == 204  # none: fine
    assert (await c.post("/hub/api/shares/alice/gpu", json={"user": "bob"}, headers=admin)).status_code == 200
    assert (await c.delete("/hub/api/users/bob/shared/alice/gpu", headers=bob)).status_code == 204
    assert (await c.get("/hub/api/users/bob/shared/alice/gpu", headers=bob)).status_code == 404
    assert (await c.delete("/hub/api/users/bob/shared/alice/gpu", headers=bob)).status_code == 404
    # every change of what bob (or admin) holds was announced
    changes = _access(await hub.events(40, timeout=1.0))
    assert changes == [["bob"], ["bob"], ["bob"], ["bob"], ["bob"], ["admin"], ["admin", "bob"], ["bob"], ["bob"]]


async def test_share_with_a_group(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    carol = await hub.headers_for("carol")
    await hub.token_for("bob")
    await hub.token_for("alice")
    r = await c.post("/hub/api/groups/team", json={"users": ["bob", "carol"]}, headers=admin)
    assert r.status_code == 201
    # alice never started her default server: it exists all the same, and can be shared
    r = await c.post("/hub/api/shares/alice/", json={"group": "team", "scopes": ["access:servers!server=alice/"]},
                     headers=admin)
    assert r.status_code == 200, r.text
    share = r.json()
    assert (share["user"], share["group"], share["kind"]) == (None, {"name": "team"}, "group")
    assert share["server"]["url"] == "/user/alice/" and share["server"]["name"] == ""
    assert [s["kind"] for s in _items(await c.get("/hub/api/groups/team/shared", headers=admin))] == ["group"]
    assert (await c.get("/hub/api/groups/team/shared/alice/", headers=admin)).json()["group"] == {"name": "team"}
    # members see it among what is shared with them; their own share of it does not exist
    assert [s["group"] for s in _items(await c.get("/hub/api/users/carol/shared", headers=carol))] == [{"name": "team"}]
    assert (await c.get("/hub/api/users/carol/shared/alice/", headers=carol)).status_code == 404
    # a member may not make the group leave; an admin may
    r = await c.delete("/hub/api/groups/team/shared/alice/", headers=carol)
    assert r.status_code == 403 and DENIED in r.json()["message"]
    assert (await c.delete("/hub/api/groups/team/shared/alice/", headers=admin)).status_code == 204
    assert _items(await c.get("/hub/api/groups/team/shared", headers=admin)) == []
    assert (await c.get("/hub/api/groups/team/shared/alice/", headers=admin)).status_code == 404
    # group shares through PATCH and DELETE concern every member
    assert (await c.post("/hub/api/shares/alice/", json={"group": "team"}, headers=admin)).status_code == 200
    assert (await c.patch("/hub/api/shares/alice/", json={"group": "team"}, headers=admin)).json() == {}
    assert (await c.post("/hub/api/shares/alice/", json={"group": "team"}, headers=admin)).status_code == 200
    assert (await c.delete("/hub/api/shares/alice/", headers=admin)).status_code == 204
    changes = _access(await hub.events(40, timeout=1.0))
    assert changes[-6:] == [["bob", "carol"]] * 6  # group members added, then five share changes


async def test_who_may_share(hub: Hub) -> None:
    c = hub.client
    alice = await hub.headers_for("alice")
    bob = await hub.headers_for("bob")
    await c.post("/hub/api/groups/team", json={}, headers=await hub.headers_for("admin", admin=True))
    # no credentials; a user without `shares` (JupyterHub's default); a sharer of her own servers only
    r = await c.get("/hub/api/shares/alice")
    assert r.status_code == 403 and r.json()["message"] == "Missing or invalid credentials."
    r = await c.post("/hub/api/shares/bob/", json={"user": "alice"}, headers=bob)
    assert r.status_code == 403 and DENIED in r.json()["message"]
    r = await c.post("/hub/api/share-codes/bob/", json={}, headers=bob)
    assert r.status_code == 403 and DENIED in r.json()["message"]
    assert _items(await c.get("/hub/api/shares/bob", headers=bob)) == []  # read:shares is bob's own (`self`)
    assert _items(await c.get("/hub/api/share-codes/bob/", headers=bob)) == []
    for path in ("/hub/api/shares/alice", "/hub/api/shares/alice/", "/hub/api/share-codes/alice",
                 "/hub/api/users/alice/shared", "/hub/api/users/alice/shared/bob/"):
        r = await c.get(path, headers=bob)
        assert r.status_code == 404 and r.json()["message"] == HIDDEN, path
    r = await c.get("/hub/api/groups/team/shared", headers=bob)
    assert r.status_code == 403 and DENIED in r.json()["message"]
    assert (await c.post("/hub/api/shares/alice/", json={"user": "bob"}, headers=alice)).status_code == 200
    assert (await c.post("/hub/api/shares/alice/", json={"group": "team"}, headers=alice)).status_code == 200
    for method in ("POST", "PATCH", "DELETE"):
        r = await c.request(method, "/hub/api/shares/bob/", json={"user": "alice"}, headers=alice)
        assert r.status_code == 404 and r.json()["message"] == HIDDEN, method
    r = await c.delete("/hub/api/users/bob/shared/alice/", headers=alice)
    assert r.status_code == 404 and r.json()["message"] == HIDDEN
    # a sharer gives only what it holds itself
    r = await c.post("/hub/api/shares/alice/", json={"user": "bob", "scopes": ["admin:server_state"]}, headers=alice)
    assert r.status_code == 403
    assert r.json()["message"] == "Do not have permission to grant share with scope admin:server_state!server=alice/"
    r = await c.post("/hub/api/share-codes/alice/", json={"scopes": ["admin:server_state"]}, headers=alice)
    assert r.status_code == 403
    # and must be able to name whom it shares with
    narrow = await hub.headers_for("alice", scopes=["shares!user=alice"])
    r = await c.post("/hub/api/shares/alice/", json={"user": "bob"}, headers=narrow)
    assert r.status_code == 403 and "read:users:name" in r.json()["message"]
    r = await c.post("/hub/api/shares/alice/", json={"group": "team"}, headers=narrow)
    assert r.status_code == 403 and "read:groups:name" in r.json()["message"]
    assert (await c.post("/hub/api/share-codes/alice/", json={}, headers=narrow)).status_code == 200
    # the grantee may read and leave its share; the owner revoke it
    assert (await c.get("/hub/api/users/bob/shared/alice/", headers=bob)).status_code == 200
    assert (await c.delete("/hub/api/users/bob/shared/alice/", headers=bob)).status_code == 204
    assert (await c.delete("/hub/api/shares/alice/", headers=alice)).status_code == 204


async def test_bad_share_requests(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    await hub.token_for("bob")
    await _server(hub, "alice", "gpu")
    path = "/hub/api/shares/alice/gpu"
    bad: Any
    for bad in ([1], "bob", {}, {"user": "bob", "group": "team"}, {"user": 1}, {"group": ["team"]},
                {"user": "bob", "scopes": "read:servers"}, {"user": "bob", "scopes": [1]},
                {"user": "bob", "scopes": ["no:such:scope"]}, {"user": "bob", "scopes": ["inherit"]},
                {"user": "bob", "scopes": ["access:servers!server=alice/other"]},
                {"user": "bob", "scopes": ["read:servers!user=alice"]}, {"user": "bob", "extra": 1},
                {"user": "bob", "scopes": ["read:servers"] * 101}):
        for method in ("POST", "PATCH"):
            r = await c.request(method, path, json=bad, headers=admin)
            assert r.status_code == 400 and r.json()["message"], (method, bad, r.text)
    for raw in (b"{not json", b"\xff", b"", b'{"group": "\\ud800"}', b'{"user": "a\\u0000b"}',
                b'{"user": "bob", "scopes": ["\\ud800"]}'):
        r = await c.post(path, content=raw, headers=admin)
        assert r.status_code == 400 and r.json()["message"], raw
    # names PostgreSQL cannot hold name nothing
    for method, where in (("GET", "shares/a%00b"), ("DELETE", "shares/alice/a%00b"), ("GET", "users/a%00b/shared"),
                          ("GET", "groups/a%00b/shared"), ("DELETE", "users/bob/shared/a%00b/"),
                          ("DELETE", "share-codes/alice/gpu?code=%00"), ("DELETE", "share-codes/alice/gpu?id=sc_%00")):
        assert (await c.request(method, f"/hub/api/{where}", headers=admin)).status_code == 404, where
    # whom to share with must exist (400, as JupyterHub); the server too (404)
    r = await c.post(path, json={"user": "nobody"}, headers=admin)
    assert r.status_code == 400 and r.json()["message"] == "No such user: nobody"
    r = await c.post(path, json={"group": "nogroup"}, headers=admin)
    assert r.status_code == 400 and r.json()["message"] == "No such group: nogroup"
    for method in ("GET", "POST", "PATCH", "DELETE"):
        for where in ("alice/nosuch", "nobody/", "alice/a/b"):
            r = await c.request(method, f"/hub/api/shares/{where}", json={"user": "bob"}, headers=admin)
            assert r.status_code == 404 and r.json()["message"].startswith("No such server"), (method, where)
    assert (await c.get("/hub/api/shares/nobody", headers=admin)).status_code == 404
    assert (await c.post("/hub/api/shares/alice", json={"user": "bob"}, headers=admin)).status_code == 405
    assert (await c.get("/hub/api/users/nobody/shared", headers=admin)).status_code == 404
    assert (await c.get("/hub/api/groups/nogroup/shared", headers=admin)).status_code == 404
    for who in ("users/nobody", "users/bob", "groups/nogroup"):
        for where in ("alice/gpu", "alice/nosuch", "nobody/"):
            r = await c.get(f"/hub/api/{who}/shared/{where}", headers=admin)
            assert r.status_code == 404 and r.json()["message"].startswith("No such share"), (who, where)
    # pagination: a bad offset is a 400, pages link to the next one
    assert (await c.get("/hub/api/shares/alice?offset=x", headers=admin)).status_code == 400
    await hub.token_for("carol")
    for name in ("bob", "carol"):
        assert (await c.post(path, json={"user": name}, headers=admin)).status_code == 200
    r = await c.get("/hub/api/shares/alice?limit=1", headers=admin)
    assert [s["user"]["name"] for s in _items(r)] == ["bob"]
    nxt = r.json()["_pagination"]["next"]
    assert nxt["offset"] == 1 and nxt["url"].startswith("http://127.0.0.1:8000/hub/api/shares/alice?")
    r = await c.get(nxt["url"], headers=admin)
    assert [s["user"]["name"] for s in _items(r)] == ["carol"] and r.json()["_pagination"]["next"] is None


async def test_share_codes(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    await _server(hub, "alice", "gpu")
    path = "/hub/api/share-codes/alice/gpu"
    r = await c.post(path, headers=admin)  # no body: the defaults
    assert r.status_code == 200, r.text
    made = r.json()
    assert made.keys() == CODE_KEYS | {"code", "accept_url", "full_accept_url"}
    code = made["code"]
    assert made["accept_url"] == f"/hub/accept-share?code={code}" and made["full_accept_url"] is None
    assert made["scopes"] == ["access:servers!server=alice/gpu"] and made["id"].startswith("sc_")
    assert made["server"] == {"name": "gpu", "url": "/user/alice/gpu/", "full_url": None, "ready": False,
                              "user": {"name": "alice"}}
    assert (made["exchange_count"], made["last_exchanged_at"]) == (0, None)
    assert ISO_Z.match(made["created_at"]) and ISO_Z.match(made["expires_at"])
    lifetime = utcnow() + timedelta(days=1) - _parse(made["expires_at"])
    assert timedelta(0) <= lifetime < timedelta(minutes=1)
    async with hub.sessions() as s:  # only the code's hash is kept
        (row,) = (await s.execute(select(ShareCode))).scalars()
        assert row.hashed == hash_token(code) and code not in repr(vars(row))
    # the code is shown once: lists carry the model without it
    listed = _items(await c.get("/hub/api/share-codes/alice", headers=admin))
    assert listed == [{k: made[k] for k in CODE_KEYS}]
    assert _items(await c.get(path, headers=admin)) == listed
    assert _items(await c.get("/hub/api/share-codes/alice/", headers=admin)) == []

    r = await c.post(path, json={"scopes": ["read:servers", "access:servers"], "expires_in": 60}, headers=admin)
    assert r.status_code == 200 and r.json()["scopes"] == ["access:servers!server=alice/gpu",
                                                           "read:servers!server=alice/gpu"]
    bad: Any
    for bad in ({"expires_in": 59}, {"expires_in": 365 * 86400 + 1}, {"expires_in": "3600"}, {"expires_in": 1.5},
                {"expires_in": None}, {"scopes": ["nope"]}, {"scopes": ["read:servers!server=bob/"]}, {"x": 1}, [1]):
        r = await c.post(path, json=bad, headers=admin)
        assert r.status_code == 400 and r.json()["message"], (bad, r.text)
    assert (await c.post("/hub/api/share-codes/alice/nosuch", json={}, headers=admin)).status_code == 404
    assert (await c.post("/hub/api/share-codes/alice", json={}, headers=admin)).status_code == 405
    assert (await c.get("/hub/api/share-codes/nobody", headers=admin)).status_code == 404
    assert (await c.get("/hub/api/share-codes/alice/nosuch", headers=admin)).status_code == 404

    # an expired code is no longer listed
    async with hub.sessions() as s, s.begin():
        await s.execute(update(ShareCode).where(ShareCode.id == int(made["id"][3:]))
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert [x["expires_at"] for x in _items(await c.get(path, headers=admin))] != [made["expires_at"]]
    assert len(_items(await c.get(path, headers=admin))) == 1

    # deleting: by id, by code, or all; unknown ones are 404s, never 500s
    for query in ("id=sc_x", "id=12", "id=sc_", "id=sc_99999999999999999999", "id=sc_0", "code=wrong"):
        r = await c.delete(f"{path}?{query}", headers=admin)
        assert r.status_code == 404 and r.json()["message"], query
    assert (await c.delete(f"/hub/api/share-codes/alice/nosuch?code={code}", headers=admin)).status_code == 404
    second = (await c.post(path, json={}, headers=admin)).json()
    third = (await c.post(path, json={}, headers=admin)).json()
    assert (await c.delete(f"{path}?id={second['id']}", headers=admin)).status_code == 204
    assert (await c.delete(f"{path}?id={second['id']}", headers=admin)).status_code == 404
    assert (await c.delete(f"{path}?code={third['code']}", headers=admin)).status_code == 204
    assert len(_items(await c.get(path, headers=admin))) == 1
    assert (await c.delete(path, headers=admin)).status_code == 204
    assert _items(await c.get(path, headers=admin)) == []


def _parse(ts: str) -> Any:
    from datetime import UTC, datetime

    return datetime.fromisoformat(ts.rstrip("Z")).replace(tzinfo=UTC)


async def _form(page: httpx.Response) -> dict[str, str]:
    assert page.status_code == 200, page.text
    return dict(FORM_FIELD.findall(page.text))


async def test_accept_a_share_code(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    await _server(hub, "carol", "gpu")
    code = (await c.post("/hub/api/share-codes/carol/gpu", json={"scopes": ["read:servers"]}, headers=admin)).json()
    url = code["accept_url"]
    # logged out: to the login page and back
    r = await c.get(url)
    assert r.status_code == 302
    assert r.headers["location"] == "/hub/login?next=" + "%2Fhub%2Faccept-share%3Fcode%3D" + code["code"]
    assert (await c.post("/hub/accept-share", data={"code": code["code"]})).status_code == 403
    await hub.login(c, "alice")
    page = await c.get(url)
    form = await _form(page)
    assert "carol" in page.text and "/user/carol/gpu/" in page.text and "read:servers!server=carol/gpu" in page.text
    assert "not running" in page.text and 'action="/hub/accept-share"' in page.text
    assert form == {"_xsrf": hub.xsrf(c), "code": code["code"], "next": "/user/carol/gpu/"}
    # the form must carry the session's XSRF token
    for xsrf in ({}, {"_xsrf": "x.y"}):
        r = await c.post("/hub/accept-share", data={"code": code["code"], **xsrf})
        assert r.status_code == 403
    assert await _share_rows(hub) == []
    r = await c.post("/hub/accept-share", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/user/carol/gpu/"
    assert await _share_rows(hub) == [("alice", ["read:servers!server=carol/gpu"])]
    # accepting again changes nothing but the count; `next` is followed when it is ours
    r = await c.post(f"/hub/accept-share?code={code['code']}&next=/user/carol/gpu/lab", data={"_xsrf": form["_xsrf"]})
    assert r.status_code == 303 and r.headers["location"] == "/user/carol/gpu/lab"
    r = await c.post("/hub/accept-share", data={**form, "next": "//evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/user/carol/gpu/"
    page = await c.get(f"{url}&next=https://evil.example/")
    assert (await _form(page))["next"] == "/user/carol/gpu/"
    (listed,) = _items(await c.get("/hub/api/share-codes/carol/gpu", headers=admin))
    assert listed["exchange_count"] == 3 and ISO_Z.match(listed["last_exchanged_at"])
    assert await _share_rows(hub) == [("alice", ["read:servers!server=carol/gpu"])]
    assert _access(await hub.events(20, timeout=1.0)) == [["alice"]]

    # unknown, missing and expired codes; one's own code
    r = await c.get("/hub/accept-share?code=nosuch")
    assert r.status_code == 404 and "Share not found or expired" in r.text and "<html" in r.text
    assert (await c.post("/hub/accept-share", data={**form, "code": "nosuch"})).status_code == 400
    assert (await c.get("/hub/accept-share")).status_code == 400
    assert (await c.post("/hub/accept-share", data={"_xsrf": form["_xsrf"]})).status_code == 400
    async with hub.sessions() as s, s.begin():
        await s.execute(update(ShareCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert (await c.get(url)).status_code == 404
    r = await c.post("/hub/accept-share", data=form)
    assert r.status_code == 400 and "expired" in r.text
    await _server(hub, "alice", "mine")
    mine = (await c.post("/hub/api/share-codes/alice/mine", json={}, headers=admin)).json()
    r = await c.get(mine["accept_url"])
    assert r.status_code == 403 and "yourself" in r.text
    r = await c.post("/hub/accept-share", data={**form, "code": mine["code"]})
    assert r.status_code == 400 and "yourself" in r.text


async def test_share_grants_access(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    bob = await hub.headers_for("bob")
    await hub.token_for("alice")
    wanted = "access:servers!server=alice/"

    async def scopes() -> list[str]:
        r = await c.get("/hub/api/user", headers=bob)
        assert r.status_code == 200
        held: list[str] = r.json()["scopes"]
        return held

    assert wanted not in await scopes()  # and now bob's scopes are cached
    assert (await c.post("/hub/api/shares/alice/", json={"user": "bob"}, headers=admin)).status_code == 200
    await wait_for(lambda: _holds(scopes, wanted, True), timeout=5, what="the share's scope")
    assert (await c.patch("/hub/api/shares/alice/", json={"user": "bob"}, headers=admin)).json() == {}
    await wait_for(lambda: _holds(scopes, wanted, False), timeout=5, what="the scope revoked")
    # through a group
    r = await c.post("/hub/api/groups/team", json={"users": ["bob"]}, headers=admin)
    assert r.status_code == 201
    assert (await c.post("/hub/api/shares/alice/", json={"group": "team"}, headers=admin)).status_code == 200
    await wait_for(lambda: _holds(scopes, wanted, True), timeout=5, what="the group share's scope")


async def _holds(scopes: Any, wanted: str, present: bool) -> bool:
    return (wanted in await scopes()) is present


async def test_full_urls_with_a_public_url(settings: ServiceSettings) -> None:
    public = settings.model_copy(update={"public_url": "https://hub.example.org/"})
    async with running_hub(public) as hub:
        admin = await hub.headers_for("admin", admin=True)
        await hub.token_for("bob")
        await hub.token_for("alice")
        r = await hub.client.post("/hub/api/share-codes/alice/", json={}, headers=admin)
        made = r.json()
        assert made["full_accept_url"] == f"https://hub.example.org/hub/accept-share?code={made['code']}"
        assert made["server"]["full_url"] == "https://hub.example.org/user/alice/"
        r = await hub.client.post("/hub/api/shares/alice/", json={"user": "bob"}, headers=admin)
        assert r.json()["server"]["full_url"] == "https://hub.example.org/user/alice/"
