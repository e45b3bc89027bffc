"""Version, health, common headers, and how requests are authenticated (tokens, cookies, XSRF)."""

from __future__ import annotations

import pytest

from tests.support.hub import Hub

pytestmark = pytest.mark.integration


async def test_version_health_and_headers(hub: Hub) -> None:
    for path in ("/hub/api/", "/hub/api"):
        r = await hub.client.get(path)
        assert r.status_code == 200 and r.json() == {"version": "5.4.0"}
        assert r.headers["access-control-allow-origin"] == "*"
    for path in ("/hub/health", "/hub/api/health"):
        assert (await hub.client.get(path)).status_code == 200
    # every answer carries the version, errors included; API errors are JSON in JupyterHub's shape
    for method, path, status in [("GET", "/hub/api/nope", 404), ("GET", "/hub/api/users", 403),
                                 ("PUT", "/hub/api/", 405), ("GET", "/hub/login", 200), ("GET", "/hub/nope", 404)]:
        r = await hub.client.request(method, path)
        assert r.status_code == status, (method, path, r.text)
        assert r.headers["x-jupyterhub-version"] == "5.4.0", path
        assert r.headers["x-content-type-options"] == "nosniff"
        if path.startswith("/hub/api"):
            assert r.headers["content-type"] == "application/json" and r.json()["status"] == status
            assert r.headers["content-security-policy"] == "default-src 'none'"
            assert "access-control-allow-origin" not in r.headers or path == "/hub/api/"
    r = await hub.client.options("/hub/api/users")
    assert r.status_code == 200 and r.content == b"" and "authorization" in r.headers["access-control-allow-headers"]


async def test_token_credentials(hub: Hub) -> None:
    r = await hub.client.get("/hub/api/user")
    assert r.status_code == 403 and r.json() == {"status": 403, "message": "Missing or invalid credentials."}
    for header in ("token nope", "bearer nope", "Basic YWxpY2U6eA==", "token", "token a b"):
        r = await hub.client.get("/hub/api/user", headers={"Authorization": header})
        assert r.status_code == 403 and r.json()["message"] == "Missing or invalid credentials.", header
    tok = await hub.token_for("alice")
    assert (await hub.client.get(f"/hub/api/user?token={tok}")).status_code == 403  # never in the URL
    for scheme in ("token", "Token", "bearer", "BEARER"):
        r = await hub.client.get("/hub/api/user", headers={"Authorization": f"{scheme} {tok}"})
        assert r.status_code == 200 and r.json()["name"] == "alice"
    me = r.json()
    assert me["kind"] == "user" and me["token_id"].startswith("a") and me["session_id"] is None
    assert {"access:servers!user=alice", "servers!user=alice", "read:users!user=alice", "tokens!user=alice",
            "users:activity!user=alice"} <= set(me["scopes"])
    assert not any("!" not in s for s in me["scopes"])  # a plain user holds nothing hub-wide
    admin = (await hub.client.get("/hub/api/user", headers=await hub.headers_for("admin", admin=True))).json()
    assert {"admin:users", "admin:servers", "list:users", "proxy", "read:users"} <= set(admin["scopes"])
    assert admin["admin"] is True and admin["roles"] == ["admin", "user"]


async def test_cookie_requests_need_the_sessions_xsrf_token(hub: Hub) -> None:
    c = hub.client
    assert (await hub.login(c, "alice")).status_code == 302
    xsrf = hub.xsrf(c)
    # cookie-authenticated API calls need the token, GETs included (browser fetch, EventSource)
    for headers in ({}, {"Sec-Fetch-Mode": "cors"}, {"Sec-Fetch-Mode": "navigate"}, {"X-XSRFToken": "x.y"}):
        assert (await c.get("/hub/api/user", headers=headers)).status_code == 403, headers
    assert (await c.get("/hub/api/user", headers={"X-XSRFToken": xsrf})).status_code == 200
    assert (await c.get("/hub/api/user", headers={"X-CSRFToken": xsrf})).status_code == 200
    assert (await c.get(f"/hub/api/user?_xsrf={xsrf}")).status_code == 200
    # state-changing calls too, and a non-JSON body counts as unauthenticated (cross-site forms)
    assert (await c.post("/hub/api/users/alice/server")).status_code == 403
    # a websocket's mark exempts a websocket (a GET) and nothing else
    websocket = {"Sec-Fetch-Mode": "websocket"}
    assert (await c.get("/hub/api/user", headers=websocket)).status_code == 200
    assert (await c.post("/hub/api/users/alice/server", headers=websocket)).status_code == 403
    assert (await c.delete("/hub/api/users/alice/server", headers=websocket)).status_code == 403
    for no_cors in ({"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "same-origin"}, {"Origin": "https://evil.com"}):
        assert (await c.post("/hub/api/users/alice/server", headers=no_cors)).status_code == 403
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = await c.post("/hub/api/users/alice/server", content=b"{}", headers={"X-XSRFToken": xsrf,
                                                                                "Content-Type": ctype})
        assert r.status_code == 403, ctype
    assert (await c.post("/hub/api/users/alice/server", headers={"X-XSRFToken": xsrf})).status_code == 202
    # a token valid for another session (another user's, taken from their cookie) does not pass here
    async with hub.new_client() as other:
        await hub.login(other, "admin")
        foreign = hub.xsrf(other)
    c.cookies.set("_xsrf", foreign, path="/hub/")
    assert (await c.get("/hub/api/user", headers={"X-XSRFToken": foreign})).status_code == 403
    # a non-token Authorization header falls back to the cookie
    c.cookies.set("_xsrf", xsrf, path="/hub/")
    r = await c.get("/hub/api/user", headers={"X-XSRFToken": xsrf, "Authorization": "Basic YWxpY2U6eA=="})
    assert r.status_code == 200
    # tokens skip XSRF entirely
    r = await hub.client.post("/hub/api/users/bob/tokens", headers=await hub.headers_for("bob"))
    assert r.status_code == 201


async def test_bad_bodies_are_400_not_422(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    for body in (b"{not json", b"\xff\xfe", b"[" * 50_000, b'{"usernames": ["a"' ):
        r = await c.post("/hub/api/users", content=body, headers={**admin, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json() == {"status": 400, "message": "Invalid JSON in request body"}
    r = await c.post("/hub/api/users", content=b'{"usernames": ["' + b"a" * 2_000_000 + b'"]}', headers=admin)
    assert r.status_code == 413 and r.json()["status"] == 413
    for query in ("offset=abc", "limit=1.5", "include_stopped_servers=maybe", "state=weird", "sort=password"):
        r = await c.get(f"/hub/api/users?{query}", headers=admin)
        assert r.status_code == 400 and r.json()["message"], query
