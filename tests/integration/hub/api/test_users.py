"""`/hub/api/users`: models, creation, deletion, listing, and who may do which."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from fleethub.shared.db.models import OutboxMessage, Server, User
from fleethub.shared.events import StopServer, UserCreated, UserDeleted
from tests.support.hub import Hub

pytestmark = pytest.mark.integration

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
USER_KEYS = {"kind", "name", "admin", "roles", "groups", "server", "pending", "created", "last_activity",
             "auth_state", "servers"}


async def test_create_read_and_delete_users(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    r = await c.post("/hub/api/users", json={"usernames": ["bob", "Carol", "bob"]}, headers=admin)
    assert r.status_code == 201 and [u["name"] for u in r.json()] == ["bob", "carol"]
    assert (await c.post("/hub/api/users", json={"usernames": ["bob"]}, headers=admin)).status_code == 409
    r = await c.post("/hub/api/users", json={"usernames": ["bob", "dave"], "admin": True}, headers=admin)
    assert r.status_code == 201 and [(u["name"], u["admin"]) for u in r.json()] == [("dave", True)]
    assert (await c.post("/hub/api/users/erin", headers=admin)).status_code == 201
    r = await c.post("/hub/api/users/erin", headers=admin)
    assert r.status_code == 409 and r.json()["message"] == "User erin already exists"
    bad: object
    for bad in ({"usernames": ["a/b"]}, {"usernames": [""]}, {"usernames": []}, {"usernames": "bob"},
                {"usernames": [1]}, {"usernames": ["x" * 256]}, {"usernames": ["a\u0000b"]}, {}, [1, 2],
                {"usernames": ["ok"], "admin": "yes"}):
        r = await c.post("/hub/api/users", json=bad, headers=admin)
        assert r.status_code == 400 and r.json()["message"], (bad, r.text)
    # curl -d sends form-encoded by default: the JSON is still read for token requests
    r = await c.post("/hub/api/users", content=b'{"usernames": ["frank"]}',
                     headers={**admin, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 201
    created = [e for e in await hub.events(10, timeout=1.0) if isinstance(e, UserCreated)]
    assert sorted(e.name for e in created) == ["bob", "carol", "dave", "erin", "frank"]

    bob = (await c.get("/hub/api/users/bob", headers=admin)).json()
    assert bob.keys() == USER_KEYS
    assert bob["kind"] == "user" and bob["roles"] == ["user"] and bob["servers"] == {} and bob["server"] is None
    assert ISO_Z.match(bob["created"]) and bob["last_activity"] is None and bob["pending"] is None
    assert (await c.get("/hub/api/users/nobody", headers=admin)).status_code == 404

    # deleting: not yourself; a running server gets its stop command with the deletion
    assert (await c.delete("/hub/api/users/admin", headers=admin)).status_code == 400
    assert (await c.post("/hub/api/users/carol/server", headers=admin)).status_code == 202
    assert (await c.delete("/hub/api/users/carol", headers=admin)).status_code == 204
    assert (await c.get("/hub/api/users/carol", headers=admin)).status_code == 404
    assert (await c.delete("/hub/api/users/carol", headers=admin)).status_code == 404
    stops = [m for m in await hub.commands(2) if isinstance(m, StopServer)]
    assert [(s.user, s.reason) for s in stops] == [("carol", "user-deleted")]
    deleted = [e for e in await hub.events(20, timeout=1.0) if isinstance(e, UserDeleted)]
    assert [e.name for e in deleted] == ["carol"]


async def test_users_only_act_on_themselves(hub: Hub) -> None:
    c = hub.client
    await hub.token_for("carol")
    bob = await hub.headers_for("bob")
    denied = "Action is not authorized with current scopes; requires any of"
    r = await c.get("/hub/api/users", headers=bob)
    assert r.status_code == 403 and r.json()["message"].startswith(denied)
    r = await c.post("/hub/api/users", json={"usernames": ["x"]}, headers=bob)
    assert r.status_code == 403 and "admin:users" in r.json()["message"]
    assert (await c.get("/hub/api/proxy", headers=bob)).status_code == 403
    # another user's resources are hidden (404), whether they exist or not
    for method, path in [("GET", "/hub/api/users/carol"), ("GET", "/hub/api/users/nobody"),
                         ("POST", "/hub/api/users/carol/server"),
                         ("DELETE", "/hub/api/users/carol/server"), ("POST", "/hub/api/users/carol/tokens"),
                         ("GET", "/hub/api/users/carol/tokens"), ("POST", "/hub/api/users/carol/activity")]:
        r = await c.request(method, path, headers=bob)
        assert r.status_code == 404 and r.json()["message"] == "No access to resources or resources not found", path
    for victim in ("bob", "carol"):  # no delete:users at all: 403, as JupyterHub answers
        assert (await c.delete(f"/hub/api/users/{victim}", headers=bob)).status_code == 403
    me = (await c.get("/hub/api/users/bob", headers=bob)).json()
    assert me["name"] == "bob" and "auth_state" not in me  # admin:auth_state only
    # a filtered admin:users (an admin's narrowed token) can not create arbitrary users
    narrow = await hub.headers_for("admin", admin=True, scopes=["admin:users!user=zed"])
    assert (await c.post("/hub/api/users", json={"usernames": ["zed"]}, headers=narrow)).status_code == 403
    assert (await c.post("/hub/api/users/zed", headers=narrow)).status_code == 201
    assert (await c.post("/hub/api/users/other", headers=narrow)).status_code == 404


async def test_restricted_tokens_see_only_their_fields(hub: Hub) -> None:
    c = hub.client
    names_only = await hub.headers_for("admin", admin=True, scopes=["list:users", "read:users:activity"])
    await hub.token_for("bob")
    users = (await c.get("/hub/api/users", headers=names_only)).json()
    assert {u["name"] for u in users} >= {"admin", "bob"}
    assert all(u.keys() == {"kind", "name", "admin", "last_activity"} for u in users)
    # a token may hold less than its owner, never more; an unknown scope grants nothing
    activity_only = await hub.headers_for("bob", scopes=["users:activity!user", "read:servers!server=bob/", "bogus"])
    me = (await c.get("/hub/api/user", headers=activity_only)).json()
    assert me["scopes"] == ["read:servers!server=bob/", "read:users:activity!user=bob", "users:activity!user=bob"]
    assert set(me) == {"kind", "name", "admin", "groups", "last_activity", "servers", "scopes", "session_id",
                       "token_id"}
    assert (await c.post("/hub/api/users/bob/server", headers=activity_only)).status_code == 403
    assert (await c.post("/hub/api/users/bob/tokens", headers=activity_only)).status_code == 403
    escalate = await hub.headers_for("bob", scopes=["admin:users"])
    assert (await c.get("/hub/api/users", headers=escalate)).status_code == 403
    narrowed = (await c.get("/hub/api/user", headers=escalate)).json()["scopes"]
    assert narrowed and "admin:users" not in narrowed and all(s.endswith("!user=bob") for s in narrowed)


async def test_listing_filters_sorts_and_pages(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    names = [f"u{i:02d}" for i in range(7)]
    assert (await c.post("/hub/api/users", json={"usernames": names}, headers=admin)).status_code == 201
    listed = (await c.get("/hub/api/users", headers=admin)).json()
    assert isinstance(listed, list) and [u["name"] for u in listed][-7:] == names  # ordered by id
    assert [u["name"] for u in (await c.get("/hub/api/users?limit=2&offset=1", headers=admin)).json()] == \
        [listed[1]["name"], listed[2]["name"]]
    assert len((await c.get("/hub/api/users?limit=0", headers=admin)).json()) == 1  # clamped to [1, 200]
    desc = (await c.get("/hub/api/users?sort=-name&name_filter=U0", headers=admin)).json()
    assert [u["name"] for u in desc] == sorted(names, reverse=True)
    assert (await c.get("/hub/api/users?name_filter=%25", headers=admin)).json() == []  # LIKE chars are literal

    # u01 has a server requested: it is active (pending), not ready
    assert (await c.post("/hub/api/users/u01/server", headers=admin)).status_code == 202
    active = (await c.get("/hub/api/users?state=active", headers=admin)).json()
    assert [u["name"] for u in active] == ["u01"] and active[0]["servers"][""]["pending"] == "spawn"
    assert (await c.get("/hub/api/users?state=ready", headers=admin)).json() == []
    assert "u01" not in {u["name"] for u in (await c.get("/hub/api/users?state=inactive", headers=admin)).json()}

    # the opt-in paginated form, with an absolute next URL the idle culler follows verbatim
    paged = {**admin, "Accept": "application/jupyterhub-pagination+json"}
    r = (await c.get("/hub/api/users?limit=3&name_filter=u0", headers=paged)).json()
    assert [u["name"] for u in r["items"]] == names[:3]
    page = r["_pagination"]
    assert (page["offset"], page["limit"], page["total"]) == (0, 3, 7)
    assert page["next"]["offset"] == 3 and page["next"]["url"].startswith("http://127.0.0.1:8000/hub/api/users?")
    seen = [u["name"] for u in r["items"]]
    while page["next"]:
        r = (await c.get(page["next"]["url"], headers=paged)).json()
        page = r["_pagination"]
        seen += [u["name"] for u in r["items"]]
    assert seen == names


async def test_user_model_reflects_server_state(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    bob = await hub.headers_for("bob")
    c = hub.client
    assert (await c.post("/hub/api/users/bob/server", json={"size": "s"}, headers=bob)).status_code == 202
    async with hub.sessions() as s, s.begin():
        server = (await s.execute(select(Server).join(User).where(User.name == "bob"))).scalar_one()
        assert server.desired == "running" and server.user_options == {"size": "s"}
        outbox = (await s.execute(select(OutboxMessage.subject))).scalars().all()
    assert any(".cmd.local.spawn.bob._" in subject for subject in outbox)
    model = (await c.get("/hub/api/users/bob", headers=admin)).json()
    srv = model["servers"][""]
    assert model["pending"] == "spawn" and model["server"] is None
    assert srv["name"] == "" and srv["full_name"] == "bob/" and srv["url"] == "/user/bob/" and srv["ready"] is False
    assert srv["stopped"] is False and srv["progress_url"] == "/hub/api/users/bob/server/progress"
    assert srv["state"] == {} and srv["user_options"] == {"size": "s"}
    assert "state" not in (await c.get("/hub/api/users/bob", headers=bob)).json()["servers"][""]
