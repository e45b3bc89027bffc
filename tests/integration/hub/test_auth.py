"""The login form, sessions, cookies, XSRF, `next` validation and the authenticators."""

from __future__ import annotations

import httpx
import pytest

from shared.settings import ServiceSettings
from tests.integration.hub.conftest import Hub, running_hub

pytestmark = pytest.mark.integration

BAD_NEXT = [
    "//evil.com/", "///evil.com/", "/\\evil.com/", "\\\\evil.com", "https://evil.com/x",
    "http://127.0.0.1:8000//evil.com/", "javascript:alert(1)", "/ok%0d%0aSet-Cookie:x=1\r\n",
]


async def test_login_sets_secure_cookies_and_redirects(hub: Hub) -> None:
    r = await hub.login(hub.client, "alice", "alice-password", next_url="/hub/spawn-pending/alice")
    assert r.status_code == 302 and r.headers["location"] == "/hub/spawn-pending/alice"
    cookies = {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}
    login = cookies["jupyterhub-hub-login"]
    assert "httponly" in login and "samesite=lax" in login and "path=/hub/" in login
    assert "path=/" in cookies["jupyterhub-session-id"] and "httponly" in cookies["jupyterhub-session-id"]
    me = await hub.client.get("/hub/api/user")
    assert me.status_code == 200 and me.json()["name"] == "alice" and me.json()["token_id"] is None


@pytest.mark.parametrize("bad", BAD_NEXT)
async def test_next_is_validated(hub: Hub, bad: str) -> None:
    from urllib.parse import quote

    r = await hub.login(hub.client, "alice", "alice-password", next_url=quote(bad, safe=""))
    assert r.status_code == 302
    assert r.headers["location"] == "/hub/home", r.headers["location"]


async def test_login_failures(hub: Hub) -> None:
    c = hub.client
    assert (await hub.login(c, "alice", "wrong-password")).status_code == 403
    assert (await hub.login(c, "nobody", "whatever1")).status_code == 403
    assert (await hub.login(c, "mallory", "mallory-password")).status_code == 403  # blocked
    assert (await hub.login(c, "bad name/x", "whatever1")).status_code == 403
    # no XSRF token, or a forged one: refused before checking the password
    r = await c.post("/hub/login", data={"username": "alice", "password": "alice-password"})
    assert r.status_code == 403
    c.cookies.set("_xsrf", "forged.value", path="/hub/")
    r = await c.post("/hub/login", data={"username": "alice", "password": "alice-password", "_xsrf": "forged.value"})
    assert r.status_code == 403
    assert "jupyterhub-hub-login" not in r.cookies


async def test_admin_users_become_admins(hub: Hub) -> None:
    await hub.login(hub.client, "admin", "admin-password")
    assert (await hub.client.get("/hub/api/user")).json()["admin"] is True


async def test_logout_ends_the_session(hub: Hub) -> None:
    await hub.login(hub.client, "alice", "alice-password")
    cookie = hub.client.cookies.get("jupyterhub-hub-login")
    r = await hub.client.get("/hub/logout")
    assert r.status_code == 302 and r.headers["location"] == "/hub/login"
    # the old cookie value is dead even if a client kept it
    async with httpx.AsyncClient(transport=hub.client._transport, base_url="http://127.0.0.1:8000") as other:  # noqa: SLF001
        other.cookies.set("jupyterhub-hub-login", cookie or "", path="/hub/")
        assert (await other.get("/hub/api/user")).status_code == 403


async def test_dummy_authenticator(hub_settings: ServiceSettings) -> None:
    settings = hub_settings.model_copy(update={"auth": hub_settings.auth.model_copy(
        update={"authenticator": "dummy", "dummy_password": __import__("pydantic").SecretStr("shared-secret")})})
    async with running_hub(settings) as hub:
        assert (await hub.login(hub.client, "NewUser", "shared-secret")).status_code == 302
        me = (await hub.client.get("/hub/api/user")).json()
        assert me["name"] == "newuser" and me["admin"] is False
        async with httpx.AsyncClient(transport=hub.client._transport, base_url="http://127.0.0.1:8000") as other:  # noqa: SLF001
            assert (await hub.login(other, "someone", "wrong")).status_code == 403


async def test_allowed_users(hub_settings: ServiceSettings) -> None:
    settings = hub_settings.model_copy(update={"auth": hub_settings.auth.model_copy(update={"allowed_users": ["bob"]})})
    async with running_hub(settings) as hub:
        assert (await hub.login(hub.client, "alice", "alice-password")).status_code == 403
        assert (await hub.login(hub.client, "admin", "admin-password")).status_code == 302
