"""The login form, sessions, cookies, XSRF, `next` validation, logout and the authenticators."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select

from fleethub.shared.db.models import LoginSession, User
from fleethub.shared.events import UserLoggedIn, UserLoggedOut
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

BAD_NEXT = [
    "//evil.com/", "///evil.com/", "////evil.com", "/\\evil.com/", "\\\\evil.com", "\\/evil.com", "https://evil.com/x",
    "https:evil.com", "https:///evil.com", "http:/\\evil.com", "http://127.0.0.1:8000//evil.com/",
    "http://127.0.0.1:8000@evil.com/", "https://evil.com#@127.0.0.1:8000", "http://127.0.0.1:8000.evil.com/",
    "javascript:alert(1)", "java\tscript:alert(1)", "data:text/html,<script>x</script>", "relative/path",
    "/ok\r\nSet-Cookie:x=1",
]


def _cookie_attrs(set_cookies: list[str]) -> dict[str, str]:
    return {c.split("=", 1)[0]: c.lower() for c in set_cookies}


async def test_login_sets_cookies_session_and_event(hub: Hub) -> None:
    r = await hub.login(hub.client, "Alice", "alice-password", next_url=quote("/hub/spawn-pending/alice?x=1", safe=""))
    assert r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice?x=1"
    cookies = _cookie_attrs(r.headers.get_list("set-cookie"))
    login = cookies["jupyterhub-hub-login"]
    assert "httponly" in login and "samesite=lax" in login and "path=/hub/" in login and "secure" not in login
    sid = cookies["jupyterhub-session-id"]
    assert "path=/;" in sid and "httponly" in sid and "samesite=lax" in sid
    xsrf = cookies["_xsrf"]
    assert "path=/hub/" in xsrf and "httponly" not in xsrf and "samesite=lax" in xsrf
    # only the hash of the cookie is stored
    value = hub.client.cookies.get("jupyterhub-hub-login")
    async with hub.sessions() as s:
        rows = (await s.execute(select(LoginSession.hashed, LoginSession.session_id))).all()
    assert len(rows) == 1 and rows[0][0] != value and rows[0][1] == hub.client.cookies.get("jupyterhub-session-id")
    me = await hub.client.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(hub.client)})
    assert me.status_code == 200
    assert me.json()["name"] == "alice" and me.json()["token_id"] is None and me.json()["session_id"] == rows[0][1]
    # the login is announced through the outbox
    events = await hub.events(1)
    assert isinstance(events[0], UserLoggedIn) and events[0].name == "alice" and events[0].authenticator == "password"
    # a logged-in user asking for the form goes straight on
    again = await hub.client.get("/hub/login?next=/hub/spawn")
    assert again.status_code == 302 and again.headers["location"] == "/hub/spawn"


async def test_next_is_validated(hub: Hub) -> None:
    for bad in BAD_NEXT:
        async with hub.new_client() as c:
            r = await hub.login(c, "alice", next_url=quote(bad, safe=""))
            assert r.status_code == 302, bad
            assert r.headers["location"] == "/hub/home", (bad, r.headers["location"])
    for good, expected in [("http://127.0.0.1:8000/hub/token?a=b", "/hub/token?a=b"), ("//127.0.0.1:8000/x", "/x"),
                           ("/has?repo=https://host.git", "/has?repo=https://host.git")]:
        async with hub.new_client() as c:
            r = await hub.login(c, "alice", next_url=quote(good, safe=""))
            assert r.headers["location"] == expected
    # rendered `next` is inert: escaped in the form's action
    page = await hub.client.get("/hub/login", params={"next": "/hub/home'><img src=x onerror=alert(1)>"})
    assert "<img" not in page.text and "onerror" in page.text


async def test_login_failures(hub: Hub) -> None:
    c = hub.client
    for user, password in [("alice", "wrong-password"), ("nobody", "whatever1"), ("mallory", None)]:
        r = await hub.login(c, user, password)
        assert r.status_code == 403 and "Invalid username or password" in r.text, user
        assert "jupyterhub-hub-login" not in r.cookies
    for bad in ("bad name", "a/b", "x" * 300, "tab\there"):
        r = await hub.login(c, bad, "whatever1")
        assert r.status_code == 400 and "invalid username" in r.text, bad
    # no XSRF token, a forged one, or one signed for another session: refused before the password is checked
    r = await c.post("/hub/login", data={"username": "alice", "password": "alice-password"})
    assert r.status_code == 403 and "session expired" in r.text
    c.cookies.set("_xsrf", "forged.value", path="/hub/")
    r = await c.post("/hub/login", data={"username": "alice", "password": "alice-password", "_xsrf": "forged.value"})
    assert r.status_code == 403 and "jupyterhub-hub-login" not in r.cookies
    async with hub.new_client() as other:
        assert (await hub.login(other, "admin")).status_code == 302
        session_bound = hub.xsrf(other)  # bound to admin's session, so no good for an anonymous form
    c.cookies.set("_xsrf", session_bound, path="/hub/")
    r = await c.post("/hub/login", data={"username": "alice", "password": "alice-password", "_xsrf": session_bound})
    assert r.status_code == 403
    async with hub.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(LoginSession))).scalar_one() == 1  # admin's only


async def test_admin_users_become_admins(hub: Hub) -> None:
    async with hub.sessions() as s, s.begin():
        admin = (await s.execute(select(User).where(User.name == "admin"))).scalar_one()
        admin.admin = False
    assert (await hub.login(hub.client, "admin")).status_code == 302
    me = await hub.client.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(hub.client)})
    assert me.json()["admin"] is True and "admin:users" in me.json()["scopes"]


async def test_logout_ends_the_session(hub: Hub) -> None:
    await hub.login(hub.client, "alice")
    cookie = hub.client.cookies.get("jupyterhub-hub-login")
    xsrf = hub.xsrf(hub.client)
    r = await hub.client.get("/hub/logout")
    assert r.status_code == 302 and r.headers["location"] == "/hub/login"
    cleared = _cookie_attrs(r.headers.get_list("set-cookie"))
    assert {"jupyterhub-hub-login", "jupyterhub-session-id", "_xsrf"} <= cleared.keys()
    assert all("max-age=0" in v or "expires=" in v for v in cleared.values())
    # the old cookie value is dead even for a client that kept it
    async with hub.new_client() as other:
        other.cookies.set("jupyterhub-hub-login", cookie or "", path="/hub/")
        other.cookies.set("_xsrf", xsrf, path="/hub/")
        assert (await other.get("/hub/api/user", headers={"X-XSRFToken": xsrf})).status_code == 403
        assert (await other.get("/hub/home")).status_code == 302
    events = await hub.events(2)
    assert [type(e) for e in events] == [UserLoggedIn, UserLoggedOut]
    # logging out without a session is harmless
    assert (await hub.client.get("/hub/logout")).status_code == 302


async def test_dummy_authenticator(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"authenticator": "dummy", "dummy_password": "shared-secret"})
    async with running_hub(settings) as hub:
        assert (await hub.login(hub.client, "NewUser", "shared-secret")).status_code == 302
        me = (await hub.client.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(hub.client)})).json()
        assert me["name"] == "newuser" and me["admin"] is False
        async with hub.new_client() as other:
            assert (await hub.login(other, "someone", "wrong-one")).status_code == 403
            # accounts of the password authenticator mean nothing to the dummy one
            assert (await hub.login(other, "alice", "alice-password")).status_code == 403
            assert (await hub.login(other, "mallory", "shared-secret")).status_code == 403  # blocked still applies


async def test_allowed_users(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    strict = {"allowed_users": ["Bob"], "allow_existing_users": False}
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth=strict)
    async with running_hub(settings) as hub:
        r = await hub.login(hub.client, "alice")  # a password account, but not in the list
        assert r.status_code == 403 and "Invalid username or password" in r.text
        async with hub.new_client() as other:
            assert (await hub.login(other, "admin")).status_code == 302  # admins are always allowed
    # JupyterHub 5's default with allowed_users: users the hub already has are let in too
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"allowed_users": ["Bob"]})
    async with running_hub(settings) as hub:
        assert (await hub.login(hub.client, "alice")).status_code == 302


async def test_secure_cookies_behind_https(tmp_path: Path, nats_url: str, database_url: str,
                                           nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, public_url="https://hub.example.org")
    async with running_hub(settings) as hub, httpx.AsyncClient(transport=hub.transport,
                                                                base_url="https://hub.example.org") as browser:
        r = await hub.login(browser, "alice", next_url=quote("https://hub.example.org/hub/x", safe=""))
        assert r.headers["location"] == "/hub/x"
        cookies = _cookie_attrs(r.headers.get_list("set-cookie"))
        assert all("secure" in cookies[name] for name in ("jupyterhub-hub-login", "jupyterhub-session-id", "_xsrf"))
