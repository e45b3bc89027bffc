"""`/hub/api/groups`: creation, members, properties, the model, listing, who may do which, and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.engine import Engine

from fleethub.shared.db.models import Group, GroupRole, Role, User
from fleethub.shared.events import AccessChanged, GroupChanged, Message
from tests.support.hub import Hub

pytestmark = pytest.mark.integration

FULL = {"kind", "name", "users", "properties", "roles"}
HIDDEN = "No access to resources or resources not found"
DENIED = "Action is not authorized with current scopes; requires any of"
PAGED = {"Accept": "application/jupyterhub-pagination+json"}


async def _users(hub: Hub, *names: str) -> None:
    for name in names:
        await hub.token_for(name)  # creates the user, without a user.created event


def _group_events(events: list[Message]) -> list[tuple[str, str, list[str]]]:
    return [(e.name, e.change, e.users) for e in events if isinstance(e, GroupChanged)]


def _access_events(events: list[Message]) -> list[list[str]]:
    # the api's start announces `everyone` (configured roles synced): not about groups
    return [e.users for e in events if isinstance(e, AccessChanged) and not e.everyone]


@contextmanager
def _statements() -> Iterator[list[str]]:
    """Every SQL statement any engine of this process runs meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def test_create_read_and_delete_groups(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    await _users(hub, "bob", "carol")
    r = await c.post("/hub/api/groups", json={"groups": ["red", "blue", "red"], "users": ["bob", "Carol"]},
                     headers=admin)
    assert r.status_code == 201, r.text
    assert r.json() == [{"kind": "group", "name": n, "users": ["bob", "carol"], "properties": {}, "roles": []}
                        for n in ("red", "blue")]
    r = await c.post("/hub/api/groups/green", headers=admin)
    assert r.status_code == 201 and r.json() == {"kind": "group", "name": "green", "users": [], "properties": {},
                                                 "roles": []}
    r = await c.post("/hub/api/groups/white", json={"users": ["bob"]}, headers=admin)
    assert r.status_code == 201 and r.json()["users"] == ["bob"]
    # any existing group: 409 naming it, and nothing of the request is created
    r = await c.post("/hub/api/groups", json={"groups": ["new", "blue"]}, headers=admin)
    assert r.status_code == 409 and r.json()["message"] == "Group blue already exists"
    assert (await c.get("/hub/api/groups/new", headers=admin)).status_code == 404
    r = await c.post("/hub/api/groups/green", json={"users": []}, headers=admin)
    assert r.status_code == 409 and r.json() == {"status": 409, "message": "Group green already exists"}
    # JupyterHub accepts (and ignores) `name` and `roles` in a group body
    r = await c.post("/hub/api/groups/black", json={"name": "x", "roles": [], "users": []}, headers=admin)
    assert r.status_code == 201 and r.json()["name"] == "black"

    red = (await c.get("/hub/api/groups/red", headers=admin)).json()
    assert red.keys() == FULL and red["users"] == ["bob", "carol"]
    r = await c.get("/hub/api/groups/nope", headers=admin)
    assert r.status_code == 404 and r.json() == {"status": 404, "message": "No such group: nope"}
    assert (await c.get("/hub/api/users/bob", headers=admin)).status_code == 200  # members are untouched users

    assert (await c.delete("/hub/api/groups/red", headers=admin)).status_code == 204
    assert (await c.get("/hub/api/groups/red", headers=admin)).status_code == 404
    r = await c.delete("/hub/api/groups/red", headers=admin)
    assert r.status_code == 404 and r.json()["message"] == "No such group: red"
    assert (await c.delete("/hub/api/groups/green", headers=admin)).status_code == 204

    events = await hub.events(20, timeout=1.0)
    assert _group_events(events) == [
        ("red", "created", ["bob", "carol"]), ("blue", "created", ["bob", "carol"]), ("green", "created", []),
        ("white", "created", ["bob"]), ("black", "created", []), ("red", "deleted", ["bob", "carol"]),
        ("green", "deleted", []),
    ]
    # members' cached scopes are dropped with every change of membership, and only then
    assert _access_events(events) == [["bob", "carol"], ["bob"], ["bob", "carol"]]


async def test_members_and_properties(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    await _users(hub, "bob", "carol", "dave")
    assert (await c.post("/hub/api/groups/team", json={"users": ["bob"]}, headers=admin)).status_code == 201
    r = await c.post("/hub/api/groups/team/users", json={"users": ["carol", "bob", "DAVE"]}, headers=admin)
    assert r.status_code == 200 and r.json()["users"] == ["bob", "carol", "dave"] and r.json().keys() == FULL
    r = await c.post("/hub/api/groups/team/users", json={"users": ["bob"]}, headers=admin)  # already in: no-op
    assert r.status_code == 200 and r.json()["users"] == ["bob", "carol", "dave"]
    r = await c.request("DELETE", "/hub/api/groups/team/users", json={"users": ["bob", "carol"]}, headers=admin)
    assert r.status_code == 200 and r.json()["users"] == ["dave"]
    r = await c.request("DELETE", "/hub/api/groups/team/users", json={"users": ["bob"]}, headers=admin)
    assert r.status_code == 200 and r.json()["users"] == ["dave"]
    # an unknown user is named, and nothing of the request happens
    r = await c.post("/hub/api/groups/team/users", json={"users": ["bob", "nobody"]}, headers=admin)
    assert r.status_code == 400 and r.json()["message"] == "No such user: nobody"
    r = await c.request("DELETE", "/hub/api/groups/team/users", json={"users": ["nobody"]}, headers=admin)
    assert r.status_code == 400 and r.json()["message"] == "No such user: nobody"
    r = await c.post("/hub/api/groups/other", json={"users": ["dave", "nobody"]}, headers=admin)
    assert r.status_code == 400 and r.json()["message"] == "No such user: nobody"
    assert (await c.get("/hub/api/groups/other", headers=admin)).status_code == 404
    assert (await c.get("/hub/api/groups/team", headers=admin)).json()["users"] == ["dave"]
    for method in ("POST", "DELETE"):
        r = await c.request(method, "/hub/api/groups/nope/users", json={"users": ["bob"]}, headers=admin)
        assert r.status_code == 404 and r.json()["message"] == "No such group: nope"

    r = await c.put("/hub/api/groups/team/properties", json={"a": 1, "b": {"c": [True, None]}}, headers=admin)
    assert r.status_code == 200 and r.json()["properties"] == {"a": 1, "b": {"c": [True, None]}}
    r = await c.put("/hub/api/groups/team/properties", json={"z": "new"}, headers=admin)  # replaces
    assert r.status_code == 200 and r.json()["properties"] == {"z": "new"} and r.json()["users"] == ["dave"]
    assert (await c.get("/hub/api/groups/team", headers=admin)).json()["properties"] == {"z": "new"}
    assert (await c.put("/hub/api/groups/nope/properties", json={}, headers=admin)).status_code == 404

    # the User model's groups
    assert (await c.post("/hub/api/groups/aaa", json={"users": ["dave"]}, headers=admin)).status_code == 201
    assert (await c.get("/hub/api/users/dave", headers=admin)).json()["groups"] == ["aaa", "team"]
    assert (await c.get("/hub/api/users/bob", headers=admin)).json()["groups"] == []

    events = await hub.events(20, timeout=1.0)
    assert _group_events(events) == [
        ("team", "created", ["bob"]), ("team", "members", ["carol", "dave"]), ("team", "members", ["bob", "carol"]),
        ("team", "properties", []), ("team", "properties", []), ("aaa", "created", ["dave"]),
    ]
    assert _access_events(events) == [["bob"], ["carol", "dave"], ["bob", "carol"], ["dave"]]


async def test_roles_and_listing(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    names = [f"g{i:02d}" for i in range(7)]
    await _users(hub, "bob")
    assert (await c.post("/hub/api/groups", json={"groups": names, "users": ["bob"]}, headers=admin)).status_code == 201
    async with hub.sessions() as s, s.begin():
        role = Role(name="viewer", scopes=["read:users"])
        s.add(role)
        await s.flush()
        gid = (await s.execute(select(Group.id).where(Group.name == "g01"))).scalar_one()
        s.add(GroupRole(group_id=gid, role_id=role.id))
    assert (await c.get("/hub/api/groups/g01", headers=admin)).json()["roles"] == ["viewer"]

    listed = (await c.get("/hub/api/groups", headers=admin)).json()
    assert [g["name"] for g in listed] == names  # by id
    assert all(g.keys() == FULL and g["users"] == ["bob"] for g in listed)
    assert [g["roles"] for g in listed][:3] == [[], ["viewer"], []]
    assert [g["name"] for g in (await c.get("/hub/api/groups?offset=2&limit=2", headers=admin)).json()] == names[2:4]
    r = (await c.get("/hub/api/groups?limit=3", headers={**admin, **PAGED})).json()
    page = r["_pagination"]
    assert [g["name"] for g in r["items"]] == names[:3] and (page["offset"], page["limit"], page["total"]) == (0, 3, 7)
    seen = [g["name"] for g in r["items"]]
    while page["next"]:
        r = (await c.get(page["next"]["url"], headers={**admin, **PAGED})).json()
        page = r["_pagination"]
        seen += [g["name"] for g in r["items"]]
    assert seen == names
    assert (await c.get("/hub/api/groups?limit=x", headers=admin)).status_code == 400

    # many groups with many members at once (more memberships than one statement has parameters)
    async with hub.sessions() as s, s.begin():
        await s.execute(insert(User).values([{"name": f"m{i:03d}"} for i in range(200)]))
    many = {"groups": [f"big{i:03d}" for i in range(200)], "users": [f"m{i:03d}" for i in range(200)]}
    r = await c.post("/hub/api/groups", json=many, headers=admin)
    assert r.status_code == 201 and len(r.json()) == 200 and all(len(g["users"]) == 200 for g in r.json())
    r = await c.get("/hub/api/groups/big199", headers=admin)
    assert r.json()["users"] == many["users"]

    # members and roles of a page come in one query each, whatever the page's size
    for limit in (1, 7):
        with _statements() as statements:
            assert len((await c.get(f"/hub/api/groups?limit={limit}", headers=admin)).json()) == limit
        # (the requester's own scopes are resolved through groups too: count only the page's reads)
        assert sum(st.startswith("SELECT group_members.group_id, users.name") for st in statements) == 1
        assert sum(st.startswith("SELECT group_roles.group_id, roles.name") for st in statements) == 1


async def test_who_may_do_what(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    await _users(hub, "carol")
    assert (await c.post("/hub/api/groups", json={"groups": ["a", "b"]}, headers=admin)).status_code == 201
    bob = await hub.headers_for("bob")
    for method, path, body in [("GET", "/hub/api/groups", None), ("POST", "/hub/api/groups", {"groups": ["x"]}),
                               ("GET", "/hub/api/groups/a", None), ("POST", "/hub/api/groups/x", None),
                               ("DELETE", "/hub/api/groups/a", None),
                               ("POST", "/hub/api/groups/a/users", {"users": ["bob"]}),
                               ("DELETE", "/hub/api/groups/a/users", {"users": ["bob"]}),
                               ("PUT", "/hub/api/groups/a/properties", {})]:
        r = await c.request(method, path, json=body, headers=bob)
        assert r.status_code == 403 and r.json()["message"].startswith(DENIED), (method, path)
    assert (await c.get("/hub/api/groups", headers={"Authorization": "token nope"})).status_code == 403

    # a token narrowed to group a: a is readable, b is hidden whether it exists or not, writes are refused
    read_a = await hub.headers_for("admin", admin=True, scopes=["read:groups!group=a"])
    r = await c.get("/hub/api/groups/a", headers=read_a)
    assert r.status_code == 200 and r.json().keys() == {"kind", "name", "users", "properties"}
    for name in ("b", "nope"):
        r = await c.get(f"/hub/api/groups/{name}", headers=read_a)
        assert r.status_code == 404 and r.json()["message"] == HIDDEN
    assert (await c.post("/hub/api/groups/a/users", json={"users": ["carol"]}, headers=read_a)).status_code == 403
    assert (await c.get("/hub/api/groups", headers=read_a)).status_code == 403

    list_a = await hub.headers_for("admin", admin=True, scopes=["list:groups!group=a", "list:groups!group=zz"])
    assert (await c.get("/hub/api/groups", headers=list_a)).json() == [{"kind": "group", "name": "a"}]
    r = (await c.get("/hub/api/groups", headers={**list_a, **PAGED})).json()
    assert r["_pagination"]["total"] == 1
    list_by_user = await hub.headers_for("admin", admin=True, scopes=["list:groups!user=carol"])
    assert (await c.get("/hub/api/groups", headers=list_by_user)).status_code == 403
    names_only = await hub.headers_for("admin", admin=True, scopes=["read:groups:name"])
    assert (await c.get("/hub/api/groups/b", headers=names_only)).json() == {"kind": "group", "name": "b"}
    roles_only = await hub.headers_for("admin", admin=True, scopes=["read:roles:groups"])
    assert (await c.get("/hub/api/groups/b", headers=roles_only)).json() == {"kind": "group", "name": "b",
                                                                             "roles": []}

    # `groups` on one group manages its members and properties only
    manage_a = await hub.headers_for("admin", admin=True, scopes=["groups!group=a"])
    r = await c.post("/hub/api/groups/a/users", json={"users": ["carol"]}, headers=manage_a)
    assert r.status_code == 200 and r.json() == {"kind": "group", "name": "a", "users": ["carol"], "properties": {}}
    assert (await c.put("/hub/api/groups/a/properties", json={"k": 1}, headers=manage_a)).status_code == 200
    for method, path in [("POST", "/hub/api/groups/b/users"), ("DELETE", "/hub/api/groups/b/users"),
                         ("PUT", "/hub/api/groups/b/properties")]:
        r = await c.request(method, path, json={"users": ["carol"]}, headers=manage_a)
        assert r.status_code == 404 and r.json()["message"] == HIDDEN, (method, path)
    assert (await c.delete("/hub/api/groups/a", headers=manage_a)).status_code == 403
    # a filtered admin:groups creates its own group only, never a list of arbitrary ones
    admin_x = await hub.headers_for("admin", admin=True, scopes=["admin:groups!group=x"])
    assert (await c.post("/hub/api/groups", json={"groups": ["x"]}, headers=admin_x)).status_code == 403
    assert (await c.post("/hub/api/groups/y", headers=admin_x)).status_code == 404
    assert (await c.post("/hub/api/groups/x", headers=admin_x)).status_code == 201
    delete_b = await hub.headers_for("admin", admin=True, scopes=["delete:groups!group=b"])
    assert (await c.delete("/hub/api/groups/a", headers=delete_b)).status_code == 404
    assert (await c.delete("/hub/api/groups/b", headers=delete_b)).status_code == 204


async def test_bad_input_is_a_400(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    await _users(hub, "bob")
    assert (await c.post("/hub/api/groups/g", headers=admin)).status_code == 201
    bad: Any
    cases: list[tuple[str, str, Any]] = []
    for bad in ({}, {"groups": []}, {"groups": "g2"}, {"groups": [1]}, {"groups": [""]}, {"groups": ["a/b"]},
                {"groups": ["x" * 256]}, {"groups": ["a\u0000b"]}, {"groups": ["tab\there"]},
                b'{"groups": ["\\ud800"]}', {"groups": ["ok"], "users": "bob"}, {"groups": ["ok"], "users": [1]},
                {"groups": ["ok"], "bogus": 1},
                {"groups": ["ok"], "users": ["nobody"]}, {"groups": ["ok"], "users": ["a/b"]},
                b'{"groups": ["ok"], "users": ["\\ud800"]}', {"groups": ["ok"], "roles": "r"}, [1], "g", None):
        cases.append(("POST", "/hub/api/groups", bad))
    for bad in ({"users": "bob"}, {"users": [None]}, {"bogus": []}, [], 3):
        cases.append(("POST", "/hub/api/groups/ok", bad))
    for method in ("POST", "DELETE"):
        for bad in (None, {}, {"users": "bob"}, {"users": [1]}, {"users": ["nobody"]}, {"usernames": ["bob"]}, []):
            cases.append((method, "/hub/api/groups/g/users", bad))
    for bad in (None, [], "x", 1, {"k": "a\u0000b"}, {"a\u0000": 1}, b'{"k": ["\\udc00"]}'):
        cases.append(("PUT", "/hub/api/groups/g/properties", bad))
    for method, path, bad in cases:  # bytes: JSON that httpx will not encode (lone surrogates)
        sent = {"content": bad} if isinstance(bad, bytes) else {"json": bad}
        r = await c.request(method, path, headers=admin, **sent)
        assert r.status_code == 400 and r.json()["status"] == 400 and r.json()["message"], (method, path, bad, r.text)
    for method, path in [("POST", "/hub/api/groups"), ("POST", "/hub/api/groups/ok"),
                         ("POST", "/hub/api/groups/g/users"), ("PUT", "/hub/api/groups/g/properties")]:
        r = await c.request(method, path, content=b"{not json", headers=admin)
        assert r.status_code == 400 and r.json()["message"] == "Invalid JSON in request body", path
    for raw in (b'{"k": NaN}', b'{"k": 1e999}'):  # Python's parser takes them; PostgreSQL's jsonb does not
        r = await c.put("/hub/api/groups/g/properties", content=raw, headers=admin)
        assert r.status_code == 400 and "finite" in r.json()["message"]
    r = await c.post("/hub/api/groups/g/users", json={}, headers=admin)
    assert r.json()["message"] == "Must specify users to add"
    r = await c.post("/hub/api/groups", json={"groups": ["ok", "x" * 256]}, headers=admin)
    assert r.json()["message"].startswith("invalid group name")
    long = "x" * 256
    for method, path in [("GET", f"/hub/api/groups/{long}"), ("POST", f"/hub/api/groups/{long}"),
                         ("DELETE", f"/hub/api/groups/{long}"), ("PUT", "/hub/api/groups/%01/properties")]:
        r = await c.request(method, path, json={}, headers=admin)
        assert r.status_code == 400 and r.json()["message"].startswith("invalid group name"), path
    assert (await c.get("/hub/api/groups/ok", headers=admin)).status_code == 404  # nothing was created
    assert (await c.get("/hub/api/groups/g", headers=admin)).json()["users"] == []


async def test_concurrent_changes_never_fail(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    await _users(hub, "bob", "carol")
    created = await asyncio.gather(*(c.post("/hub/api/groups/race", json={"users": ["bob"]}, headers=admin)
                                     for _ in range(6)))
    assert sorted(r.status_code for r in created) == [201] + [409] * 5
    added = await asyncio.gather(*(c.post("/hub/api/groups/race/users", json={"users": ["carol", "bob"]},
                                          headers=admin) for _ in range(6)))
    assert all(r.status_code == 200 and r.json()["users"] == ["bob", "carol"] for r in added)
    mixed = await asyncio.gather(
        c.delete("/hub/api/groups/race", headers=admin),
        *(c.request("DELETE", "/hub/api/groups/race/users", json={"users": ["bob"]}, headers=admin)
          for _ in range(3)),
        *(c.post("/hub/api/groups/race/users", json={"users": ["carol"]}, headers=admin) for _ in range(3)),
        c.delete("/hub/api/users/carol", headers=admin),
    )
    assert mixed[0].status_code == 204 and mixed[-1].status_code == 204
    # each lands before or after the deletions: done, or the group or user is gone
    assert all(r.status_code in (200, 400, 404) for r in mixed[1:-1]), [r.text for r in mixed]
    assert (await c.get("/hub/api/groups/race", headers=admin)).status_code == 404
    events = await hub.events(30, timeout=1.0)
    assert _group_events(events)[0] == ("race", "created", ["bob"])
    assert _group_events(events)[1] == ("race", "members", ["carol"])  # added once, not six times
