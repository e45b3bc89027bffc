"""RBAC: config roles for users, groups and services; service tokens; group filters; PATCH of users'
groups and roles; token scopes following their owner's; the services API; replicas forgetting."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fleethub.services.api.app import create_app
from fleethub.shared.db.models import Group, GroupMember, HubServiceRow, Role, User
from fleethub.shared.errors import ConfigError
from fleethub.shared.events import AccessChanged, UserUpdated
from fleethub.shared.settings import ServiceSettings
from tests.support.cluster import wait_for
from tests.support.hub import BASE_URL, Hub, _with_state, hub_settings, running_hub

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "service-token-for-the-culler-0123456789"
OTHER_TOKEN = "service-token-for-the-reader-0123456789"


def _rbac_settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, **extra: object
                   ) -> ServiceSettings:
    services = [{"name": "culler", "api_token": SERVICE_TOKEN},
                {"name": "reader", "api_token": OTHER_TOKEN, "url": "http://127.0.0.1:9999"}]
    roles = [
        {"name": "culler", "description": "the idle culler", "services": ["culler"],
         "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers", "admin:users"]},
        {"name": "team-reader", "scopes": ["read:users!group=team", "list:users!group=team", "read:groups!group=team"],
         "users": ["lead"]},
        {"name": "helpers", "scopes": ["read:users:name"], "groups": ["helpdesk"]},
        {"name": "self-reader", "scopes": ["read:services!service"], "services": ["reader"]},
        {"name": "grader", "scopes": ["custom:grades:write"], "users": ["ta"]},
    ]
    custom = {"custom:grades:write": {"description": "enter grades", "subscopes": ["custom:grades:read"]},
              "custom:grades:read": {"description": "see grades"}}
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, services=services, roles=roles,
                        custom_scopes=custom, **extra)


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return _rbac_settings(tmp_path, nats_url, database_url, nats_namespace)


def _tok(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


async def _add_members(hub: Hub, group: str, users: list[str]) -> None:
    async with hub.sessions() as s, s.begin():
        gid = (await s.execute(select(Group.id).where(Group.name == group))).scalar_one()
        for name in users:
            uid = (await s.execute(select(User.id).where(User.name == name))).scalar()
            if uid is None:
                s.add(User(name=name))
                await s.flush()
                uid = (await s.execute(select(User.id).where(User.name == name))).scalar_one()
            s.add(GroupMember(group_id=gid, user_id=uid))


async def test_config_roles_reach_users_groups_and_services(hub: Hub) -> None:
    c = hub.client
    # the service's config token is a principal with exactly its roles' scopes
    r = await c.get("/hub/api/user", headers=_tok(SERVICE_TOKEN))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["kind"] == "service" and me["name"] == "culler" and "roles" not in me  # identify only
    assert "list:users" in me["scopes"] and "delete:servers" in me["scopes"] and "admin:groups" not in me["scopes"]
    assert me["token_id"] and me["session_id"] is None
    admin = await hub.headers_for("admin", admin=True)
    assert (await c.get("/hub/api/services/culler", headers=admin)).json()["roles"] == ["culler"]
    assert (await c.post("/hub/api/users", json={"usernames": ["ann", "ben"]}, headers=admin)).status_code == 201
    r = await c.get("/hub/api/users", headers=_tok(SERVICE_TOKEN))
    assert r.status_code == 200 and {"ann", "ben", "admin", "lead"} <= {u["name"] for u in r.json()}
    assert (await c.get("/hub/api/groups", headers=_tok(SERVICE_TOKEN))).status_code == 403
    assert (await c.post("/hub/api/users/ann/tokens", headers=_tok(SERVICE_TOKEN))).status_code == 403
    # a bare !service filter in a service's role means that service
    reader = (await c.get("/hub/api/user", headers=_tok(OTHER_TOKEN))).json()
    assert "read:services!service=reader" in reader["scopes"] and reader["url"] == "http://127.0.0.1:9999"
    assert (await c.get("/hub/api/services/reader", headers=_tok(OTHER_TOKEN))).status_code == 200
    assert (await c.get("/hub/api/services/culler", headers=_tok(OTHER_TOKEN))).status_code == 404
    # config users and groups exist; a role on a group reaches its members
    await _add_members(hub, "helpdesk", ["hank"])
    hank = (await c.get("/hub/api/user", headers=await hub.headers_for("hank"))).json()
    assert "read:users:name" in hank["scopes"] and hank["groups"] == ["helpdesk"] and hank["roles"] == ["user"]
    lead = (await c.get("/hub/api/users/lead", headers=admin)).json()
    assert lead["roles"] == ["team-reader", "user"]


async def test_group_filters_cover_members_and_follow_membership(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    assert (await c.post("/hub/api/users", json={"usernames": ["tom", "una"]}, headers=admin)).status_code == 201
    async with hub.sessions() as s, s.begin():
        s.add(Group(name="team"))
    await _add_members(hub, "team", ["tom"])
    lead = await hub.headers_for("lead")
    assert (await c.get("/hub/api/users/tom", headers=lead)).status_code == 200
    assert (await c.get("/hub/api/users/una", headers=lead)).status_code == 404  # held for others: hidden
    listed = (await c.get("/hub/api/users", headers=lead)).json()
    assert [u["name"] for u in listed] == ["tom"]
    # una joins the team through PATCH: the lead's cached scopes are dropped by the access event
    r = await c.patch("/hub/api/users/una", json={"groups": ["team"]}, headers=admin)
    assert r.status_code == 200 and r.json()["groups"] == ["team"]
    await wait_for(lambda: _status(c, "/hub/api/users/una", lead, 200), timeout=3, interval=0.02,
                   what="new member visible")
    r = await c.patch("/hub/api/users/una", json={"groups": []}, headers=admin)
    assert r.status_code == 200 and r.json()["groups"] == []
    await wait_for(lambda: _status(c, "/hub/api/users/una", lead, 404), timeout=3, interval=0.02,
                   what="former member hidden")


async def _status(c: httpx.AsyncClient, path: str, headers: dict[str, str], want: int) -> bool:
    return (await c.get(path, headers=headers)).status_code == want


async def test_patch_user(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    assert (await c.post("/hub/api/users", json={"usernames": ["pat", "quin"]}, headers=admin)).status_code == 201
    pat_token = await hub.headers_for("pat")
    async with hub.sessions() as s, s.begin():
        s.add(Role(name="auditor", scopes=["read:users", "list:users"]))
        s.add(Role(name="mighty", scopes=["admin:users", "shutdown"]))
    r = await c.patch("/hub/api/users/pat", json={"roles": ["auditor"], "auth_state": {"k": 1}}, headers=admin)
    assert r.status_code == 200 and r.json()["roles"] == ["auditor", "user"] and r.json()["auth_state"] == {"k": 1}
    await wait_for(lambda: _status(c, "/hub/api/users/quin", pat_token, 200), timeout=3, interval=0.02,
                   what="role grants read:users")
    # the token follows its owner: removing the role removes the scope from the existing token
    assert (await c.patch("/hub/api/users/pat", json={"roles": []}, headers=admin)).status_code == 200
    await wait_for(lambda: _status(c, "/hub/api/users/quin", pat_token, 404), timeout=3, interval=0.02,
                   what="role removal reaches the token")
    # rename: the old name is gone, the token (by id) works under the new name
    r = await c.patch("/hub/api/users/pat", json={"name": "Patricia"}, headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "patricia"
    assert (await c.get("/hub/api/users/pat", headers=admin)).status_code == 404
    me = await c.get("/hub/api/user", headers=pat_token)
    assert me.status_code == 200 and me.json()["name"] == "patricia"
    events = [e for e in await hub.events(60) if isinstance(e, UserUpdated)]
    assert any(e.renamed_from == "pat" and e.name == "patricia" for e in events)
    # bad input: unknown key, wrong types, taken name, unknown group/role
    for bad, want in (({"nope": 1}, 400), ({"admin": "yes"}, 400), ({"name": "patricia"}, 400), ({"name": "a/b"}, 400),
                      ({"groups": ["no-such"]}, 400), ({"roles": ["no-such"]}, 400), ({"groups": "team"}, 400),
                      ({"auth_state": [1]}, 400), ([1], 400)):
        r = await c.patch("/hub/api/users/quin", json=bad, headers=admin)
        assert r.status_code == want and r.json()["message"], (bad, r.text)
    assert (await c.patch("/hub/api/users/nobody", json={"admin": True}, headers=admin)).status_code == 404
    # who may: a non-admin with admin:users on quin may not grant admin, nor a role beyond its own scopes
    async with hub.sessions() as s, s.begin():
        s.add(Role(name="quin-admin", scopes=["admin:users!user=quin"]))
    assert (await c.patch("/hub/api/users/ren", json={}, headers=await hub.headers_for("ren"))).status_code == 403
    delegate = await hub.headers_for("dee", scopes=["inherit"])
    assert (await c.patch("/hub/api/users/dee", json={"roles": ["quin-admin"]}, headers=admin)).status_code == 200
    await wait_for(lambda: _patch_status(c, "quin", {"auth_state": {"x": 1}}, delegate, 200), timeout=3,
                   interval=0.02, what="delegate may patch quin")
    assert (await c.patch("/hub/api/users/quin", json={"admin": True}, headers=delegate)).status_code == 403
    r = await c.patch("/hub/api/users/quin", json={"roles": ["mighty"]}, headers=delegate)
    assert r.status_code == 403 and "mighty" not in (await c.get("/hub/api/users/quin", headers=admin)).json()["roles"]
    assert (await c.patch("/hub/api/users/admin", json={"name": "x"}, headers=delegate)).status_code == 404
    assert (await c.patch("/hub/api/users/quin", json={"admin": True}, headers=pat_token)).status_code == 403


async def test_only_admins_delete_admins(hub: Hub) -> None:
    """A holder of admin:users who is not an admin deletes users, but not an admin (as PATCH refuses it)."""
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    made = await c.post("/hub/api/users", json={"usernames": ["carol", "vic", "boss"]}, headers=admin)
    assert made.status_code == 201
    assert (await c.patch("/hub/api/users/boss", json={"admin": True}, headers=admin)).status_code == 200
    async with hub.sessions() as s, s.begin():
        s.add(Role(name="user-admin", scopes=["admin:users"]))
    assert (await c.patch("/hub/api/users/carol", json={"roles": ["user-admin"]}, headers=admin)).status_code == 200
    carol = await hub.headers_for("carol", scopes=["inherit"])
    await wait_for(lambda: _status(c, "/hub/api/users/boss", carol, 200), timeout=3, interval=0.02,
                   what="carol holds admin:users")
    r = await c.delete("/hub/api/users/boss", headers=carol)
    assert r.status_code == 403 and r.json()["message"] == "Only admins may delete admin users"
    assert (await c.get("/hub/api/users/boss", headers=admin)).json()["admin"] is True
    assert (await c.delete("/hub/api/users/vic", headers=carol)).status_code == 204
    assert (await c.delete("/hub/api/users/boss", headers=admin)).status_code == 204


async def _patch_status(c: httpx.AsyncClient, name: str, body: object, headers: dict[str, str], want: int) -> bool:
    return (await c.patch(f"/hub/api/users/{name}", json=body, headers=headers)).status_code == want


async def test_services_api(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    r = await c.get("/hub/api/services", headers=admin)
    assert r.status_code == 200 and set(r.json()) == {"culler", "reader"}  # an object keyed by name
    reader = r.json()["reader"]
    assert reader["kind"] == "service" and reader["prefix"] == "/services/reader/" and reader["pid"] == 0
    assert (await c.get("/hub/api/services", headers=await hub.headers_for("bob"))).status_code == 403
    assert (await c.get("/hub/api/services/nope", headers=admin)).status_code == 404
    # a runtime external service, with its own token
    body = {"url": "http://127.0.0.1:9998", "api_token": "runtime-service-token-0123456789", "info": {"a": 1}}
    r = await c.post("/hub/api/services/ext", json=body, headers=admin)
    assert r.status_code == 201 and r.json()["name"] == "ext" and r.json()["info"] == {"a": 1}
    assert (await c.post("/hub/api/services/ext", json=body, headers=admin)).status_code == 409
    me = await c.get("/hub/api/user", headers=_tok(body["api_token"]))
    assert me.status_code == 200 and me.json()["kind"] == "service" and me.json()["name"] == "ext"
    for bad in ({"command": ["run"]}, {"url": "ftp://x"}, {"api_token": "short"}, {"display": "yes"}, {"bogus": 1},
                [1], {"oauth_client_id": "not-service-prefixed", "api_token": "another-service-token-0123"}):
        r = await c.post("/hub/api/services/bad", json=bad, headers=admin)
        assert r.status_code == 400 and r.json()["message"], (bad, r.text)
    assert (await c.post("/hub/api/services/bad", headers=admin)).status_code == 400  # body required
    assert (await c.post("/hub/api/services/x", json={}, headers=await hub.headers_for("bob"))).status_code == 403
    # a service can't be made admin by someone who is not
    r = await c.post("/hub/api/services/adm", json={"admin": True}, headers=_tok(SERVICE_TOKEN))
    assert r.status_code == 403  # the culler lacks admin:services altogether
    # delete: runtime 200 (and its token dies), config 405, unknown 404
    assert (await c.delete("/hub/api/services/ext", headers=admin)).status_code == 200
    assert (await c.get("/hub/api/user", headers=_tok(body["api_token"]))).status_code == 403
    assert (await c.delete("/hub/api/services/culler", headers=admin)).status_code == 405
    assert (await c.delete("/hub/api/services/ext", headers=admin)).status_code == 404


async def test_config_is_applied_again_at_start(hub: Hub, tmp_path: Path, nats_url: str, database_url: str,
                                                nats_namespace: str) -> None:
    """Roles and services removed from the config are removed; a changed service token replaces the old."""
    changed = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"allowed_users": ["zoe", "admin"]},
                           services=[{"name": "culler", "api_token": "a-brand-new-culler-token-0123456789"}],
                           roles=[{"name": "culler", "scopes": ["list:users"], "services": ["culler"]}])
    async with running_hub(changed) as again:
        assert (await again.client.get("/hub/api/user", headers=_tok(SERVICE_TOKEN))).status_code == 403
        me = (await again.client.get("/hub/api/user", headers=_tok("a-brand-new-culler-token-0123456789"))).json()
        assert me["name"] == "culler" and "delete:servers" not in me["scopes"] and "list:users" in me["scopes"]
        async with again.sessions() as s:
            assert (await s.execute(select(HubServiceRow.name))).scalars().all() == ["culler"]
            # allowed users exist before they log in (the API and `fleethub token` know them), not as admins
            assert (await s.execute(select(User.admin).where(User.name == "zoe"))).scalar_one() is False
            assert set((await s.execute(select(Role.name))).scalars()) == {"culler"}
    bad = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                       roles=[{"name": "broken", "scopes": ["read:userz"]}])
    with pytest.raises(ConfigError, match="broken"):
        async with running_hub(bad):
            pass


async def test_access_changes_reach_every_replica(hub: Hub, settings: ServiceSettings) -> None:
    other = create_app(settings)
    async with other.router.lifespan_context(other) as state:
        transport = httpx.ASGITransport(app=_with_state(other, state))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as replica_b:
            admin = await hub.headers_for("admin", admin=True)
            await hub.client.post("/hub/api/users", json={"usernames": ["vic", "wes"]}, headers=admin)
            async with hub.sessions() as s, s.begin():
                s.add(Role(name="viewer", scopes=["read:users"]))
            vic = await hub.headers_for("vic")
            assert (await replica_b.get("/hub/api/users/wes", headers=vic)).status_code == 404  # cached on B
            assert (await hub.client.patch("/hub/api/users/vic", json={"roles": ["viewer"]},
                                           headers=admin)).status_code == 200
            t0 = time.monotonic()
            await wait_for(lambda: _status(replica_b, "/hub/api/users/wes", vic, 200), timeout=4, interval=0.01,
                           what="granted on B")
            granted_after = time.monotonic() - t0
    assert any(isinstance(e, AccessChanged) and "vic" in e.users for e in await hub.events(80))
    print(f"\nrole grant honoured on the other replica after {granted_after * 1000:.0f} ms (scope cache TTL 30 s)")
    assert granted_after < 5  # far inside the TTL: the event did it


async def test_custom_scopes_include_their_subscopes(hub: Hub) -> None:
    ta = await hub.headers_for("ta")
    scopes = (await hub.client.get("/hub/api/user", headers=ta)).json()["scopes"]
    assert "custom:grades:write" in scopes and "custom:grades:read" in scopes
    # a token asking only for the parent scope holds the subscope too (the fast read's lookup and the route's)
    r = await hub.client.post("/hub/api/users/ta/tokens", json={"scopes": ["custom:grades:write"]}, headers=ta)
    assert r.status_code == 201, r.text
    narrow = {"Authorization": f"token {r.json()['token']}"}
    scopes = (await hub.client.get("/hub/api/user", headers=narrow)).json()["scopes"]
    assert {"custom:grades:write", "custom:grades:read"} <= set(scopes)
    # someone without the role may not ask for it
    r = await hub.client.post("/hub/api/users/alice/tokens", json={"scopes": ["custom:grades:read"]},
                              headers=await hub.headers_for("alice"))
    assert r.status_code == 400 and "not held by user alice" in r.json()["message"], r.text
