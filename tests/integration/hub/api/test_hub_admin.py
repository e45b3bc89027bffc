"""Hub-level endpoints: `/info`, the proxy table (GET, POST resync, PATCH), `/shutdown`, and the legacy
`/authorizations` lookups."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fleethub.shared.db.engine import make_engine
from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.events import HubShutdown, Route, StopServer
from fleethub.shared.names import route_key
from fleethub.shared.routes import serve_reconciliation
from tests.support.hub import Hub

pytestmark = pytest.mark.integration
PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}


async def test_info(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    r = await hub.client.get("/hub/api/info", headers=admin)
    assert r.status_code == 200
    info = r.json()
    assert info["version"].startswith("5.") and info["python"] and info["sys_executable"]
    assert info["spawner"]["class"].endswith("local") and info["authenticator"]["class"].endswith("password")
    assert (await hub.client.get("/hub/api/info", headers=await hub.headers_for("bob"))).status_code == 403
    assert (await hub.client.get("/hub/api/info")).status_code == 403


async def _running_server(hub: Hub, user: str, target: str) -> None:
    """A server the spawner would have recorded as running (no spawner runs in these tests)."""
    async with hub.sessions() as s, s.begin():
        uid = (await s.execute(select(User.id).where(User.name == user))).scalar_one()
        s.add(Server(user_id=uid, name="", desired="running", spawn_id=f"spawn-{user}"))
        s.add(ServerState(user_name=user, server_name="", spawn_id=f"spawn-{user}", status="running", target=target,
                          url=target))


async def test_proxy_table_resync_and_patch(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    await hub.headers_for("ann")
    await hub.headers_for("bea")
    await _running_server(hub, "ann", "http://127.0.0.1:40001")
    await _running_server(hub, "bea", "http://127.0.0.1:40002")
    stale = Route(routespec="/user/ghost/", target="http://127.0.0.1:1", data={"user": "ghost", "server_name": ""})
    await hub.bus.routes.put(route_key("ghost", ""), stale)
    # only the spawner writes routes: with no spawner worker to ask, the api answers 503
    r = await c.post("/hub/api/proxy", headers=admin)
    assert r.status_code == 503 and "spawner" in r.json()["message"]
    # a spawner worker answers the api's request (the api itself writes no route)
    engine = make_engine(hub.settings.require_database_url(), pool_size=1)
    sub = await serve_reconciliation(hub.bus, engine, hub.sessions, [])
    try:
        await _proxy_resync_and_patch(hub, admin)
    finally:
        await sub.unsubscribe()
        await engine.dispose()


async def _proxy_resync_and_patch(hub: Hub, admin: dict[str, str]) -> None:
    c = hub.client
    # POST: the table is made to match PostgreSQL now (missing routes put, orphans deleted)
    r = await c.post("/hub/api/proxy", headers=admin)
    assert r.status_code == 200 and r.json() == {"put": 2, "deleted": 1}
    table = (await c.get("/hub/api/proxy", headers=admin)).json()
    assert table["/user/ann/"]["target"] == "http://127.0.0.1:40001" and "/user/ghost/" not in table
    assert table["/user/bea/"] == {"routespec": "/user/bea/", "target": "http://127.0.0.1:40002",
                                   "data": table["/user/bea/"]["data"]}
    page = (await c.get("/hub/api/proxy?limit=1", headers={**admin, **PAGINATED})).json()
    assert list(page["items"]) == ["/user/ann/"] and page["_pagination"]["total"] == 2
    nxt = page["_pagination"]["next"]
    assert nxt["offset"] == 1 and nxt["url"].startswith("http")
    # PATCH takes JupyterHub's fields and re-syncs; nothing to do now
    r = await c.patch("/hub/api/proxy", json={"api_url": "http://127.0.0.1:8001", "auth_token": "x" * 16},
                      headers=admin)
    assert r.status_code == 200 and r.json() == {"put": 0, "deleted": 0}
    for bad in ({"port": "80"}, {"nope": 1}, [1]):
        r = await c.patch("/hub/api/proxy", json=bad, headers=admin)
        assert r.status_code == 400 and r.json()["message"], bad
    bob = await hub.headers_for("bob")
    for method in ("GET", "POST", "PATCH"):
        assert (await c.request(method, "/hub/api/proxy", headers=bob)).status_code == 403


async def test_shutdown(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    assert (await c.post("/hub/api/shutdown", headers=await hub.headers_for("bob"))).status_code == 403
    for bad in ({"servers": "yes"}, {"proxy": 1}, [True]):
        r = await c.post("/hub/api/shutdown", json=bad, headers=admin)
        assert r.status_code == 400 and r.json()["message"], bad
    await hub.headers_for("cyd")
    await _running_server(hub, "cyd", "http://127.0.0.1:40003")
    r = await c.post("/hub/api/shutdown", json={"proxy": False}, headers=admin)
    assert r.status_code == 202 and r.json() == {"message": "Shutting down Hub"}
    stops = [m for m in await hub.commands(5, timeout=1.0) if isinstance(m, StopServer)]
    assert [(m.user, m.reason) for m in stops] == [("cyd", "shutdown")]
    events = [e for e in await hub.events(30, timeout=1.0) if isinstance(e, HubShutdown)]
    assert [(e.servers, e.proxy) for e in events] == [(True, False)]
    # this in-process api (as in every test) does not exit; `fleethub up` does (tests/integration/test_up.py)
    assert (await c.get("/hub/api/user", headers=admin)).status_code == 200


async def test_legacy_authorizations(hub: Hub) -> None:
    c = hub.client
    admin = await hub.headers_for("admin", admin=True)
    bob_token = await hub.token_for("bob")
    r = await c.get(f"/hub/api/authorizations/token/{bob_token}", headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "bob" and r.json()["kind"] == "user"
    # a requester who may not read bob still learns only who owns the token
    carol = await hub.headers_for("carol")
    r = await c.get(f"/hub/api/authorizations/token/{bob_token}", headers=carol)
    assert r.status_code == 200 and r.json() == {"kind": "user", "name": "bob"}
    for bad in ("nope-not-a-token", "x", "a" * 2000):
        assert (await c.get(f"/hub/api/authorizations/token/{bad}", headers=admin)).status_code == 404
    assert (await c.get(f"/hub/api/authorizations/token/{bob_token}")).status_code == 403
    r = await c.post("/hub/api/authorizations/token", json={"username": "bob", "password": "x"}, headers=admin)
    assert r.status_code == 404 and "removed" in r.json()["message"]
    # the cookie lookup: a logged-in browser's hub cookie names its user
    browser = hub.new_client()
    async with browser:
        await hub.login(browser, "alice")
        cookie = browser.cookies.get("jupyterhub-hub-login", path="/hub/")
        assert cookie
        r = await c.get(f"/hub/api/authorizations/cookie/jupyterhub-hub-login/{cookie}", headers=admin)
        assert r.status_code == 200 and r.json()["name"] == "alice"
        assert (await c.get("/hub/api/authorizations/cookie/jupyterhub-hub-login/forged",
                            headers=admin)).status_code == 404
        assert (await c.get(f"/hub/api/authorizations/cookie/other/{cookie}", headers=admin)).status_code == 404
