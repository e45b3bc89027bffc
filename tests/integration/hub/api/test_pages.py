"""Hub pages (home, start, stop, spawn-pending) and the answers for URLs of servers that have no route."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.dialects.postgresql import insert

from fleethub.shared.db.models import ServerState
from fleethub.shared.events import StopServer, utcnow
from tests.support.hub import Hub

pytestmark = pytest.mark.integration

FORM_XSRF = re.compile(r'name="_xsrf" value="([^"]+)"')


async def _set_state(hub: Hub, user: str, spawn_id: str, status: str, message: str = "") -> None:
    values = {"spawn_id": spawn_id, "status": status, "message": message, "url": f"/user/{user}/",
              "target": "http://127.0.0.1:1", "started": utcnow()}
    async with hub.sessions() as s, s.begin():
        await s.execute(insert(ServerState).values(user_name=user, server_name="", **values)
                        .on_conflict_do_update(index_elements=["user_name", "server_name"], set_=values))


async def test_home_start_and_stop(hub: Hub) -> None:
    c = hub.client
    assert (await c.get("/hub/")).headers["location"] == "/hub/home"
    r = await c.get("/hub/home")
    assert r.status_code == 302 and r.headers["location"] == "/hub/login?next=%2Fhub%2Fhome"
    await hub.login(c, "alice")
    home = await c.get("/hub/home")
    assert home.status_code == 200 and "alice" in home.text and "Start my server" in home.text
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
    xsrf = FORM_XSRF.search(home.text)
    assert xsrf and xsrf.group(1) == hub.xsrf(c)  # the form carries the session's cookie token
    # forms need the session's token
    assert (await c.post("/hub/spawn", data={})).status_code == 403
    assert (await c.post("/hub/spawn", data={"_xsrf": "x.y"})).status_code == 403
    assert await hub.commands(1, timeout=0.3) == []
    r = await c.post("/hub/spawn", data={"_xsrf": xsrf.group(1)})
    assert r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice"
    cmd = await hub.spawn_command()
    assert cmd.user == "alice"
    pending = await c.get("/hub/spawn-pending/alice")
    assert pending.status_code == 200 and 'http-equiv="refresh"' in pending.text
    assert "Starting" in (await c.get("/hub/home")).text
    await _set_state(hub, "alice", cmd.spawn_id, "running")
    r = await c.get("/hub/spawn-pending/alice?next=/user/alice/lab")
    assert r.status_code == 302 and r.headers["location"] == "/user/alice/lab"
    r = await c.get("/hub/spawn-pending/alice?next=//evil.com/")
    assert r.headers["location"] == "/user/alice/"
    assert "Stop my server" in (await c.get("/hub/home")).text
    r = await c.post("/hub/stop", data={"_xsrf": xsrf.group(1)})
    assert r.status_code == 302 and r.headers["location"] == "/hub/home"
    (stop,) = await hub.commands(1)
    assert isinstance(stop, StopServer) and stop.spawn_id == cmd.spawn_id
    # another user's pending page is hidden
    assert (await c.get("/hub/spawn-pending/admin")).status_code == 404


async def test_spawn_page_and_failures(hub: Hub) -> None:
    c = hub.client
    await hub.login(c, "alice")
    page = await c.get("/hub/spawn")
    assert page.status_code == 200 and 'action="/hub/spawn"' in page.text
    assert await hub.commands(1, timeout=0.3) == []  # a GET never starts anything
    assert (await c.get("/hub/spawn/admin")).status_code == 404
    r = await c.post("/hub/spawn/alice", data={"_xsrf": hub.xsrf(c)})
    assert r.status_code == 302
    cmd = await hub.spawn_command()
    await _set_state(hub, "alice", cmd.spawn_id, "failed", "no <such> image")
    r = await c.get("/hub/spawn-pending/alice")
    assert r.status_code == 500 and "no &lt;such&gt; image" in r.text and "refresh" not in r.text
    # named servers are off on this hub: no form for them, nothing started
    assert (await c.get("/hub/spawn/alice/gpu")).status_code == 404
    assert (await c.post("/hub/spawn/alice/gpu", data={"_xsrf": hub.xsrf(c)})).status_code == 404
    assert await hub.commands(1, timeout=0.3) == []
    # an admin may start someone else's server from the page
    async with hub.new_client() as admin:
        await hub.login(admin, "admin")
        r = await admin.post("/hub/spawn/alice", data={"_xsrf": hub.xsrf(admin)})
        assert r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice"


async def test_urls_of_servers_without_a_route(hub: Hub) -> None:
    c = hub.client
    alice = await hub.headers_for("alice")
    r = await c.get("/hub/user/alice/api/contents", headers=alice)
    assert r.status_code == 424 and r.headers["content-type"] == "application/json"
    assert r.json() == {"status": 424, "message": "JupyterHub server no longer running at /user/alice/api/contents. "
                                                  "Restart the server at /hub/spawn/alice"}
    assert r.headers["x-jupyterhub-version"] == "5.4.0"
    assert (await c.post("/hub/user/alice/lab", headers=alice)).status_code == 424
    # unauthenticated browsers log in first and come back
    r = await c.get("/hub/user/alice/lab?x=1")
    assert r.status_code == 302 and r.headers["location"] == "/hub/login?next=%2Fhub%2Fuser%2Falice%2Flab%3Fx%3D1"
    assert (await c.post("/hub/user/alice/lab")).status_code == 403
    await hub.login(c, "alice")
    # "Start it" carries where it was going, less the redirect count and any credential
    r = await c.get("/hub/user/alice/lab?x=1&redirects=2&token=s3cret&_xsrf=s3cret", headers={"Accept": "text/html"})
    assert r.status_code == 424 and "Start it" in r.text
    assert 'action="/hub/spawn/alice?next=/user/alice/lab%3Fx%3D1"' in r.text and "s3cret" not in r.text
    for other in ("/hub/user/admin/lab", "/hub/user/nobody/lab"):  # others' servers are hidden
        assert (await c.get(other)).status_code == 404
    # pending: to the spawn-pending page; running (route not seen yet): back, counting redirects
    assert (await c.post("/hub/api/users/alice/server", headers=alice)).status_code == 202
    cmd = await hub.spawn_command()
    r = await c.get("/hub/user/alice/lab/tree")
    assert r.status_code == 303 and r.headers["location"] == "/hub/spawn-pending/alice?next=/user/alice/lab/tree"
    await _set_state(hub, "alice", cmd.spawn_id, "running")
    r = await c.get("/hub/user/alice/lab/tree?a=b")
    assert r.status_code == 302 and r.headers["location"] == "/user/alice/lab/tree?a=b&redirects=1"
    r = await c.get("/hub/user/alice/lab?redirects=3")
    assert r.headers["location"] == "/user/alice/lab?redirects=4"
    r = await c.get("/hub/user/alice/lab?redirects=4")
    assert r.status_code == 500 and "Redirect loop" in r.text
    assert (await c.get("/hub/user/alice/lab?redirects=abc")).status_code == 302
    # an admin may reach another user's server
    r = await c.get("/hub/user/alice/lab", headers=await hub.headers_for("admin", admin=True))
    assert r.status_code == 302


async def test_proxy_error_page_keeps_the_status_and_escapes_the_url(hub: Hub) -> None:
    r = await hub.client.get("/hub/error/503", params={"url": "/user/alice/lab?<script>"})
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
    assert "not answering" in r.text and "/hub/home" in r.text
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    assert (await hub.client.get("/hub/error/200")).status_code == 400
    assert (await hub.client.get("/hub/error/abc")).status_code in (400, 404, 422)


async def test_user_redirect_goes_to_the_users_own_server(hub: Hub) -> None:
    c = hub.client
    r = await c.get("/hub/user-redirect/lab/tree/a.ipynb?x=1")
    assert r.status_code == 302 and r.headers["location"].startswith("/hub/login?next=")
    assert "user-redirect" in r.headers["location"]
    await hub.login(c, "alice")
    r = await c.get("/hub/user-redirect/lab/tree/a%20b.ipynb?x=1")
    assert r.status_code == 302 and r.headers["location"] == "/user/alice/lab/tree/a%20b.ipynb?x=1"
    r = await c.get("/hub/user-redirect")
    assert r.status_code == 302 and r.headers["location"] == "/user/alice/"
    for bad in ("/hub/user-redirect/../admin/x", "/hub/user-redirect/a/%2e%2e/b", "/hub/user-redirect/a%5cb"):
        r = await c.get(bad)
        assert r.status_code in (400, 404) and not r.headers.get("location", "").startswith("/user/alice/.."), bad
