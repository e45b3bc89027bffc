"""`/hub/api/users/{name}/tokens`: the plaintext once, only a hash kept, scopes never beyond the owner's."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from fleethub.shared.db.models import ApiToken
from fleethub.shared.events import TokenRevoked
from fleethub.shared.security import server_token
from tests.support.hub import Hub

pytestmark = pytest.mark.integration
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")

TOKEN_KEYS = {"id", "kind", "user", "roles", "scopes", "note", "created", "expires_at", "last_activity",
              "session_id", "oauth_client"}


async def test_create_use_list_and_revoke(hub: Hub) -> None:
    c = hub.client
    bob = await hub.headers_for("bob")
    r = await c.post("/hub/api/users/bob/tokens", json={"note": "ci", "expires_in": 3600}, headers=bob)
    assert r.status_code == 201
    model = r.json()
    assert model.keys() == TOKEN_KEYS | {"token"}
    assert model["note"] == "ci" and model["kind"] == "api_token" and model["user"] == "bob" and model["roles"] == []
    assert re.fullmatch(r"a\d+", model["id"]) and re.fullmatch(r"[0-9a-f]{32}", model["token"])
    assert model["scopes"] == ["inherit"] and model["expires_at"].endswith("Z")
    new = {"Authorization": f"bearer {model['token']}"}
    assert (await c.get("/hub/api/user", headers=new)).json()["name"] == "bob"
    async with hub.sessions() as s:
        stored = (await s.execute(select(ApiToken.hashed))).scalars().all()
    assert model["token"] not in stored and all(len(h) == 64 for h in stored)  # only hashes are kept

    listed = (await c.get("/hub/api/users/bob/tokens", headers=bob)).json()["api_tokens"]
    assert model["id"] in {t["id"] for t in listed} and all("token" not in t for t in listed)
    one = (await c.get(f"/hub/api/users/bob/tokens/{model['id']}", headers=bob)).json()
    assert one["id"] == model["id"] and one["note"] == "ci"
    for bad_id in ("a999999", "17", "abc", "a" + "9" * 30):
        assert (await c.get(f"/hub/api/users/bob/tokens/{bad_id}", headers=bob)).status_code == 404
    carol_token = (await c.post("/hub/api/users/carol/tokens", headers=await hub.headers_for("carol"))).json()
    assert (await c.get(f"/hub/api/users/bob/tokens/{carol_token['id']}", headers=bob)).status_code == 404

    assert (await c.delete(f"/hub/api/users/bob/tokens/{model['id']}", headers=bob)).status_code == 204
    assert (await c.get("/hub/api/user", headers=new)).status_code == 403  # at once on this replica
    assert (await c.delete(f"/hub/api/users/bob/tokens/{model['id']}", headers=bob)).status_code == 404
    revoked = [e for e in await hub.events(5, timeout=1.0) if isinstance(e, TokenRevoked)]
    assert [(f"a{e.token_id}", e.user) for e in revoked] == [(model["id"], "bob")]

    # an admin may make a token for someone else; the note says who asked
    admin = await hub.headers_for("admin", admin=True)
    r = await c.post("/hub/api/users/bob/tokens", headers=admin)
    assert r.status_code == 201 and r.json()["note"] == "Requested via api by user admin"


async def test_bad_token_requests(hub: Hub) -> None:
    c = hub.client
    bob = await hub.headers_for("bob")
    body: object
    for body in ({"expires_in": 1.5}, {"expires_in": 1.0}, {"expires_in": "60"}, {"expires_in": -1},
                 {"expires_in": True}, {"note": 5}, {"scopes": "inherit"}, {"scopes": ["nope"]},
                 {"scopes": ["read:users!group=x"]}, {"scopes": ["inherit"], "roles": ["token"]},
                 {"roles": ["admin"]}, [], "x"):
        r = await c.post("/hub/api/users/bob/tokens", json=body, headers=bob)
        assert r.status_code == 400 and r.json()["message"], body
    # never more than the owner holds, nor more than the requesting token holds
    for scopes in (["admin:users"], ["read:users"], ["read:users!user=carol"], ["servers!server=carol/"]):
        r = await c.post("/hub/api/users/bob/tokens", json={"scopes": scopes}, headers=bob)
        assert r.status_code == 400 and "not held" in r.json()["message"], scopes
    r = await c.post("/hub/api/users/bob/tokens", json={"scopes": ["read:users!user", "servers!server=bob/"]},
                     headers=bob)
    assert r.status_code == 201 and r.json()["scopes"] == ["read:users!user=bob", "servers!server=bob/"]
    narrow = {"Authorization": f"token {r.json()['token']}"}
    assert (await c.post("/hub/api/users/bob/tokens", headers=narrow)).status_code == 403  # no `tokens` scope
    tokens_only = await hub.headers_for("bob", scopes=["tokens!user"])
    r = await c.post("/hub/api/users/bob/tokens", json={"scopes": ["read:users!user=bob"]}, headers=tokens_only)
    assert r.status_code == 400 and "requester" in r.json()["message"]
    r = await c.post("/hub/api/users/bob/tokens", json={"roles": ["user"]}, headers=bob)
    assert r.status_code == 201 and "servers!user=bob" in r.json()["scopes"]
    r = await c.post("/hub/api/users/nobody/tokens", headers=await hub.headers_for("admin", admin=True))
    assert r.status_code == 404


async def test_credentials_in_the_body(hub: Hub) -> None:
    """Scripts without a token may send the user's credentials in `auth` (the test hub's password accounts)."""
    c = hub.client
    body = {"auth": {"username": "alice", "password": "alice-password"}, "note": "script"}
    r = await c.post("/hub/api/users/alice/tokens", json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["user"] == "alice" and made["note"] == "script"
    assert (await c.get("/hub/api/user", headers={"Authorization": f"token {made['token']}"})).json()["name"] == "alice"
    for bad in ({"auth": {"username": "alice", "password": "wrong"}},
                {"auth": {"username": "admin", "password": "admin-password"}},  # someone else's credentials
                {"auth": {"username": "mallory", "password": "mallory-password"}},  # blocked user
                {}):
        assert (await c.post("/hub/api/users/alice/tokens", json=bad)).status_code == 403, bad
    r = await c.post("/hub/api/users/mallory/tokens", json={"auth": {"username": "mallory",
                                                                       "password": "mallory-password"}})
    assert r.status_code == 403
    for bad in ({"auth": {"username": 1, "password": "x"}}, {"auth": "alice:alice-password"}):
        r = await c.post("/hub/api/users/alice/tokens", json=bad)
        assert r.status_code == 400 and r.json()["message"], bad


async def test_revoking_an_oauth_token_revokes_its_clients_tokens(hub: Hub) -> None:
    c = hub.client
    bob = await hub.headers_for("bob")
    async with hub.sessions() as s, s.begin():
        uid = (await s.execute(select(ApiToken.user_id).where(ApiToken.note == "test"))).scalars().first()
        for i in range(3):
            s.add(ApiToken(user_id=uid, hashed=f"{i:064d}", kind="oauth", client_id="jupyterhub-user-bob" if i < 2
                           else "service-other", scopes=["access:servers!server=bob/"], note="oauth"))
    listed = (await c.get("/hub/api/users/bob/tokens", headers=bob)).json()["api_tokens"]
    oauth = [t for t in listed if t["note"] == "oauth"]
    assert sorted(t["oauth_client"] for t in oauth) == ["jupyterhub-user-bob", "jupyterhub-user-bob", "service-other"]
    first = next(t for t in oauth if t["oauth_client"] == "jupyterhub-user-bob")
    assert (await c.delete(f"/hub/api/users/bob/tokens/{first['id']}", headers=bob)).status_code == 204
    left = (await c.get("/hub/api/users/bob/tokens", headers=bob)).json()["api_tokens"]
    assert [t["oauth_client"] for t in left if t["note"] == "oauth"] == ["service-other"]


async def test_token_use_is_recorded(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    r = await c.post("/hub/api/users/alice/tokens", json={"note": "script"}, headers=admin)
    assert r.status_code == 201
    token_id, mine = r.json()["id"], {"Authorization": f"token {r.json()['token']}"}
    assert (await c.post("/hub/api/users/alice/server", headers=mine)).status_code == 202
    token_use = hub.api_state["token_use"]
    await token_use.flush()
    used = (await c.get(f"/hub/api/users/alice/tokens/{token_id}", headers=admin)).json()["last_activity"]
    assert used is not None and ISO_Z.match(used)
    alice = (await c.get("/hub/api/users/alice", headers=admin)).json()["last_activity"]  # the fast read
    assert alice is not None and alice >= used
    # the server's own token: the token's use is recorded, its user is not made active by it
    async with hub.sessions() as s:
        spawn_id = (await s.execute(select(ApiToken.spawn_id).where(ApiToken.kind == "server"))).scalar_one()
    server = {"Authorization": f"token {server_token(hub.secret_key, spawn_id)}"}
    await token_use.flush()  # the admin's reads above
    r = await c.post("/hub/api/users/alice/activity", json={"last_activity": "2020-01-01T00:00:00Z"}, headers=server)
    assert r.status_code in (200, 204), r.text
    await token_use.flush()
    assert (await c.get("/hub/api/users/alice", headers=admin)).json()["last_activity"] == alice
    tokens = (await c.get("/hub/api/users/alice/tokens", headers=admin)).json()["api_tokens"]
    assert all(t["last_activity"] for t in tokens if t["id"] == token_id)
    async with hub.sessions() as s:
        server_used = (await s.execute(select(ApiToken.last_activity).where(ApiToken.kind == "server"))).scalar_one()
    assert server_used is not None
    # nothing noted: a flush writes nothing and raises nothing
    await token_use.flush()
