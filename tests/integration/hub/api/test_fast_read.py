"""`GET /hub/api/users/{name}` answered in front of FastAPI (fleethub.services.api.fastread): the same answers as the
route, which still answers everything that is not a plain token read; revocation, a lost database and
concurrent first requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, update

from fleethub.services.api.fastread import FastReads
from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.settings import ServiceSettings
from tests.support.hub import Hub, hub_settings

pytestmark = pytest.mark.integration

# an extra query parameter (ignored by the route) keeps a request away from the fast path
ROUTE = "_route=1"


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    roles = [{"name": "lab", "scopes": ["read:users:name"], "users": ["alice"]}]
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, api={"allow_named_servers": True},
                        roles=roles)


def _fast(hub: Hub) -> FastReads:
    reads = hub.api_state["fast_reads"]
    assert isinstance(reads, FastReads)
    return reads


async def _both(hub: Hub, path: str, headers: dict[str, str], query: str = "") -> tuple[Any, Any]:
    """The fast answer and the route's to the same read (both 200), checking which answered each."""
    reads = _fast(hub)
    before = reads.answered
    fast = await hub.client.get(f"{path}?{query}" if query else path, headers=headers)
    assert fast.status_code == 200, fast.text
    assert reads.answered == before + 1
    route = await hub.client.get(f"{path}?{query}&{ROUTE}" if query else f"{path}?{ROUTE}", headers=headers)
    assert route.status_code == 200, route.text
    assert reads.answered == before + 1
    for name in ("content-type", "x-jupyterhub-version", "content-security-policy", "x-content-type-options"):
        assert fast.headers.get(name) == route.headers.get(name), name
    return fast.json(), route.json()


async def _alice_with_servers(hub: Hub) -> None:
    """alice: a running default server with backend state, a pending named one, a stopped named one,
    a group and a custom role."""
    admin = await hub.headers_for("admin", admin=True)
    alice = await hub.headers_for("alice")
    c = hub.client
    assert (await c.post("/hub/api/groups/team", json={"users": ["alice"]}, headers=admin)).status_code == 201
    assert (await c.post("/hub/api/users/alice/server", json={"size": "s"}, headers=alice)).status_code == 202
    for name in ("lab", "old"):
        assert (await c.post(f"/hub/api/users/alice/servers/{name}", headers=alice)).status_code == 202
    now = datetime.now(UTC)
    async with hub.sessions() as s, s.begin():
        servers = {srv.name: srv for srv in (await s.execute(
            select(Server).join(User).where(User.name == "alice"))).scalars()}
        s.add(ServerState(user_name="alice", server_name="", spawn_id=servers[""].spawn_id, status="running",
                          url="http://127.0.0.1:1", state={"pid": 42}, started=now))
        s.add(ServerState(user_name="alice", server_name="old", spawn_id=servers["old"].spawn_id, status="stopped",
                          state={}, stopped=now))
        await s.execute(update(Server).where(Server.id == servers["old"].id).values(desired="stopped"))
        await s.execute(update(User).where(User.name == "alice").values(last_activity=now))


async def test_fast_answers_equal_the_routes(hub: Hub) -> None:
    await _alice_with_servers(hub)
    admin = await hub.headers_for("admin", admin=True)
    fast, route = await _both(hub, "/hub/api/users/alice", admin)
    assert fast == route
    assert fast["groups"] == ["team"] and fast["roles"] == ["lab", "user"] and fast["server"] == "/user/alice/"
    assert set(fast["servers"]) == {"", "lab"} and fast["servers"][""]["state"] == {"pid": 42}
    assert fast["servers"]["lab"]["pending"] == "spawn" and fast["servers"][""]["user_options"] == {"size": "s"}
    for query in ("include_stopped_servers=true", "include_stopped_servers=1", "include_stopped_servers=false"):
        fast, route = await _both(hub, "/hub/api/users/alice", admin, query)
        assert fast == route
    assert set(fast["servers"]) == {"", "lab"}
    fast, _ = await _both(hub, "/hub/api/users/alice", admin, "include_stopped_servers=true")
    assert set(fast["servers"]) == {"", "lab", "old"} and fast["servers"]["old"]["stopped"] is True
    # the user herself: no backend state; narrower tokens: only their fields and servers
    alice = await hub.headers_for("alice")
    fast, route = await _both(hub, "/hub/api/users/alice", alice)
    assert fast == route and "state" not in fast["servers"][""] and "auth_state" not in fast
    for scopes in (["read:users:name!user=alice"], ["read:servers!user=alice"], ["read:users:activity"],
                   ["read:users:groups", "read:roles:users"], ["admin:auth_state!user=alice", "read:users"]):
        headers = await hub.headers_for("admin", admin=True, scopes=scopes)
        fast, route = await _both(hub, "/hub/api/users/alice", headers)
        assert fast == route, scopes
    headers = await hub.headers_for("admin", admin=True, scopes=["read:servers!user=alice"])
    fast, _ = await _both(hub, "/hub/api/users/alice", headers)
    assert "groups" not in fast and "last_activity" not in fast and set(fast["servers"]) == {"", "lab"}
    # a change shows in the next read: nothing about the user is kept between requests
    assert (await hub.client.patch("/hub/api/users/alice", json={"admin": True}, headers=admin)).status_code == 200
    fast, route = await _both(hub, "/hub/api/users/alice", admin)
    assert fast["admin"] is True and fast == route


async def test_everything_else_is_answered_by_the_route(hub: Hub) -> None:
    alice = await hub.headers_for("alice")
    carol = await hub.headers_for("carol")  # no role but `user`: she reads herself only
    await hub.headers_for("bob")
    reads = _fast(hub)
    before = reads.answered
    c = hub.client
    cases = [
        ("/hub/api/users/bob", carol, 404, "No access to resources or resources not found"),  # held for others
        ("/hub/api/users/nobody", await hub.headers_for("admin", admin=True), 404, "No such user: nobody"),
        ("/hub/api/users/alice", {"Authorization": "token not-a-token"}, 403, None),
        ("/hub/api/users/alice", {}, 403, None),
        ("/hub/api/users/alice?include_stopped_servers=maybe", alice, 400, None),
        ("/hub/api/users/a%00b", alice, 404, None),
    ]
    for path, headers, status, message in cases:
        r = await c.get(path, headers=headers)
        assert r.status_code == status, (path, r.text)
        assert r.json()["message"] and (message is None or r.json()["message"] == message), r.text
        assert r.headers["x-jupyterhub-version"]
    # a token without any read scope: the route's 403
    r = await c.get("/hub/api/users/alice", headers=await hub.headers_for("alice", scopes=["access:servers"]))
    assert r.status_code == 403 and "requires any of" in r.json()["message"]
    # a cookie (a browser) is the route's too
    browser = hub.new_client()
    assert (await hub.login(browser, "alice")).status_code == 302
    r = await browser.get("/hub/api/users/alice", headers={"X-XSRFToken": hub.xsrf(browser)})
    assert r.status_code == 200 and r.json()["name"] == "alice"
    await browser.aclose()
    assert reads.answered == before


async def test_a_revoked_token_stops_at_once(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    r = await c.post("/hub/api/users/alice/tokens", json={"note": "script"}, headers=admin)
    assert r.status_code == 201
    token, token_id = r.json()["token"], r.json()["id"]
    mine = {"Authorization": f"token {token}"}
    before = _fast(hub).answered
    assert (await c.get("/hub/api/users/alice", headers=mine)).status_code == 200
    assert _fast(hub).answered == before + 1
    assert (await c.delete(f"/hub/api/users/alice/tokens/{token_id}", headers=admin)).status_code == 204
    r = await c.get("/hub/api/users/alice", headers=mine)
    assert r.status_code == 403 and _fast(hub).answered == before + 1


async def test_concurrent_first_reads_share_one_lookup(hub: Hub) -> None:
    alice = await hub.headers_for("alice")  # never used yet: neither token nor scopes are cached
    reads = _fast(hub)
    before = reads.answered
    answers = await asyncio.gather(*(hub.client.get("/hub/api/users/alice", headers=alice) for _ in range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    assert all(r.json()["name"] == "alice" for r in answers)
    assert reads.answered == before + 20


async def test_lost_database_connections_are_replaced(hub: Hub, database_url: str) -> None:
    alice = await hub.headers_for("alice")
    c = hub.client
    reads = _fast(hub)
    # concurrent reads: the fast path keeps several connections
    answers = await asyncio.gather(*(c.get("/hub/api/users/alice", headers=alice) for _ in range(12)))
    assert {r.status_code for r in answers} == {200} and len(reads.conns.idle) > 1
    # PostgreSQL ends every connection of the hub (a restart or failover looks like this to the api)
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        killed = await conn.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await conn.close()
    assert killed >= 1
    # the fast path finds its connection dead, drops the others it kept and renews the engine's pool (all
    # dead too), and leaves the read to the route, which answers from the renewed pool: no 503 at all
    r = await c.get("/hub/api/users/alice", headers=alice)
    assert r.status_code == 200, r.text
    before = reads.answered
    for _ in range(3):
        r = await c.get("/hub/api/users/alice", headers=alice)
        assert r.status_code == 200 and r.json()["name"] == "alice", r.text
    assert reads.answered == before + 3
