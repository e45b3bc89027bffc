"""The hub's OAuth2 provider: the flow jupyterhub-singleuser runs, and every way it must refuse."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from fleethub.services.api.servers import server_ended
from fleethub.shared.accounts import set_password
from fleethub.shared.db.models import OAuthCode, Server, User
from fleethub.shared.events import new_id, utcnow
from fleethub.shared.security import server_token
from tests.support.cluster import wait_for
from tests.support.hub import XSRF_FIELD, Hub

pytestmark = pytest.mark.integration

CLIENT = "jupyterhub-user-alice"
REDIRECT = "/user/alice/oauth_callback"


async def running_server(hub: Hub, user: str = "alice", name: str = "") -> str:
    """A running server of `user` in the database (as the api records a spawn); returns its spawn id."""
    spawn = new_id()
    async with hub.sessions() as s, s.begin():
        owner = (await s.execute(select(User).where(User.name == user))).scalar_one_or_none()
        if owner is None:
            owner = User(name=user)
            s.add(owner)
            await s.flush()
        s.add(Server(user_id=owner.id, name=name, desired="running", spawn_id=spawn, user_options={}))
    return spawn


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(client_id: str = CLIENT, redirect_uri: str = REDIRECT, **extra: str) -> str:
    params = {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code", "state": "st4te", **extra}
    return str(httpx.URL("/hub/api/oauth2/authorize", params=params))


async def get_code(browser: httpx.AsyncClient, url: str) -> str:
    r = await browser.get(url)
    assert r.status_code == 302, r.text
    location = urlsplit(r.headers["location"])
    assert location.path == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st4te"]
    return query["code"][0]


async def exchange(hub: Hub, code: str, secret: str, **extra: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": CLIENT,
            "client_secret": secret, **extra}
    return await hub.client.post("/hub/api/oauth2/token", data=data)


async def test_singleuser_flow_with_pkce_gives_a_token_the_api_knows(hub: Hub) -> None:
    spawn = await running_server(hub)
    secret = server_token(hub.secret_key, spawn)
    async with hub.new_client() as browser:
        r = await browser.get(authorize_url())
        assert r.status_code == 302 and r.headers["location"].startswith("/hub/login?next=%2Fhub%2Fapi%2Foauth2")
        assert (await hub.login(browser, "alice")).status_code == 302
        verifier, challenge = pkce()
        code = await get_code(browser, authorize_url(code_challenge=challenge, code_challenge_method="S256"))

    r = await exchange(hub, code, secret, code_verifier=verifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 86400
    assert "access:servers!server=alice/" in body["scope"].split()
    me = await hub.client.get("/hub/api/user", headers={"Authorization": f"token {body['access_token']}"})
    assert me.status_code == 200 and me.json()["name"] == "alice"
    assert "access:servers!server=alice/" in me.json()["scopes"]
    assert not any(s.startswith("admin") or s.startswith("servers") for s in me.json()["scopes"])

    again = await exchange(hub, code, secret, code_verifier=verifier)  # single use
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"

    # the token dies with the server: deleted, and dropped from the api's cache by the revocation event
    # (well before the cache's own 5 s expiry)
    async with hub.sessions() as s, s.begin():
        await server_ended(s, spawn, hub.settings.nats_namespace)
    t0 = time.monotonic()

    async def refused() -> bool:
        r = await hub.client.get("/hub/api/user", headers={"Authorization": f"token {body['access_token']}"})
        return r.status_code == 403

    await wait_for(refused, timeout=10, interval=0.02, what="the OAuth token refused after the server stopped")
    assert time.monotonic() - t0 < 3


async def test_a_5x_client_without_pkce_still_works_and_codes_expire(hub: Hub) -> None:
    spawn = await running_server(hub)
    secret = server_token(hub.secret_key, spawn)
    async with hub.new_client() as browser:
        await hub.login(browser, "alice")
        code = await get_code(browser, authorize_url())
        assert (await exchange(hub, code, secret)).status_code == 200
        code = await get_code(browser, authorize_url())
    async with hub.sessions() as s, s.begin():
        await s.execute(update(OAuthCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = await exchange(hub, code, secret)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_refusals(hub: Hub) -> None:
    spawn = await running_server(hub)
    secret = server_token(hub.secret_key, spawn)
    async with hub.new_client() as browser:
        await hub.login(browser, "alice")
        # unknown client, or a redirect URI other than the registered one: a page, never a redirect
        for url in (authorize_url(client_id="jupyterhub-user-nobody"),
                    authorize_url(redirect_uri="https://evil.example/user/alice/oauth_callback"),
                    authorize_url(redirect_uri="/user/alice/oauth_callback/x"),
                    # dot segments: compared as strings, never resolved (`/user/bob/..` is not alice's)
                    authorize_url(redirect_uri="/user/bob/%2e%2e/alice/oauth_callback"),
                    authorize_url(redirect_uri="/user/bob/../alice/oauth_callback"),
                    authorize_url(redirect_uri="/user/alice/./oauth_callback")):
            r = await browser.get(url)
            assert r.status_code == 400 and "location" not in r.headers, url
        r = await browser.get(authorize_url(response_type="token"))
        assert r.status_code == 302 and "error=unsupported_response_type" in r.headers["location"]
        r = await browser.get(authorize_url(code_challenge="x" * 43, code_challenge_method="plain"))
        assert r.status_code == 302 and "error=invalid_request" in r.headers["location"]

        verifier, challenge = pkce()
        code = await get_code(browser, authorize_url(code_challenge=challenge))
        assert (await exchange(hub, code, "wrong-secret")).status_code == 401  # the code survives a bad client
        r = await exchange(hub, code, secret, code_verifier="not-the-verifier-" + "x" * 40)
        assert r.status_code == 400 and "PKCE" in r.json()["error_description"]
        assert (await exchange(hub, code, secret, code_verifier=verifier)).status_code == 400  # consumed

        code = await get_code(browser, authorize_url())
        r = await exchange(hub, code, secret, redirect_uri="/user/alice/other")
        assert r.status_code == 400
        r = await exchange(hub, "", secret, grant_type="client_credentials")
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
        # HTTP Basic client authentication works too
        code = await get_code(browser, authorize_url())
        basic = base64.b64encode(f"{CLIENT}:{secret}".encode()).decode()
        r = await hub.client.post("/hub/api/oauth2/token", headers={"Authorization": f"Basic {basic}"},
                                  data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT})
        assert r.status_code == 200, r.text

    # a stopped server is no client any more
    async with hub.sessions() as s, s.begin():
        await server_ended(s, spawn)
    async with hub.new_client() as browser:
        await hub.login(browser, "alice")
        assert (await browser.get(authorize_url())).status_code == 400


async def test_other_users_are_refused_and_admins_asked_to_consent(hub: Hub) -> None:
    await running_server(hub)
    async with hub.sessions() as s, s.begin():
        await set_password(s, "bob", "bob-password-123")
    async with hub.new_client() as bob:
        await hub.login(bob, "bob", "bob-password-123")
        r = await bob.get(authorize_url())
        assert r.status_code == 403 and "location" not in r.headers

    async with hub.new_client() as admin:
        await hub.login(admin, "admin")
        page = await admin.get(authorize_url())
        assert page.status_code == 200 and "alice/" in page.text
        form = {k: v for k, v in parse_qs(urlsplit(authorize_url()).query).items()}
        fields = {k: v[0] for k, v in form.items()}
        r = await admin.post("/hub/api/oauth2/authorize", data={**fields, "_xsrf": "forged"})
        assert r.status_code == 403
        m = XSRF_FIELD.search(page.text)
        assert m
        r = await admin.post("/hub/api/oauth2/authorize", data={**fields, "_xsrf": m.group(1)})
        assert r.status_code == 302 and "code=" in r.headers["location"]


async def test_runtime_services_are_clients_with_their_allowed_scopes(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    secret = "runtime-notes-service-secret-0123"
    body = {"url": "http://127.0.0.1:9", "api_token": secret, "oauth_no_confirm": True,
            "oauth_client_allowed_scopes": ["read:users:activity!user", "read:groups"]}
    assert (await hub.client.post("/hub/api/services/notes", json=body, headers=admin)).status_code == 201
    for bad, message in (({"oauth_client_allowed_scopes": ["nope"]}, "unknown scope"),
                         ({"oauth_client_allowed_scopes": ["custom:x:y"]}, "not declared"),
                         ({"oauth_roles": ["missing"]}, "no such role")):
        r = await hub.client.post("/hub/api/services/other", json={"api_token": secret + "x", **bad}, headers=admin)
        assert r.status_code == 400 and message in r.json()["message"], r.text
    callback = "/services/notes/oauth_callback"

    async def token_for(browser: httpx.AsyncClient, **scope: str) -> dict[str, object]:
        r = await browser.get(authorize_url("service-notes", callback, **scope))
        assert r.status_code == 302 and urlsplit(r.headers["location"]).path == callback, r.text
        code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": callback,
                "client_id": "service-notes", "client_secret": secret}
        r = await hub.client.post("/hub/api/oauth2/token", data=data)
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body

    async with hub.new_client() as browser:
        assert (await hub.login(browser, "admin")).status_code == 302
        asked = await token_for(browser, scope="read:users:activity!user admin:users")
        assert set(str(asked["scope"]).split()) == {"access:services!service=notes", "read:users:name!user=admin",
                                                    "read:users:groups!user=admin", "read:users:activity!user"}
        everything = await token_for(browser)
        assert {"read:groups", "read:users:activity!user"} <= set(str(everything["scope"]).split())
        # the wrong secret is refused, as for configured clients
        r = await browser.get(authorize_url("service-notes", callback))
        code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        r = await hub.client.post("/hub/api/oauth2/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": callback,
            "client_id": "service-notes", "client_secret": "not-the-secret"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    me = await hub.client.get("/hub/api/user", headers={"Authorization": f"token {asked['access_token']}"})
    assert me.status_code == 200 and me.json()["name"] == "admin"
    assert {"access:services!service=notes", "read:users:activity!user=admin"} <= set(me.json()["scopes"])
    assert not any(s.startswith("admin:") for s in me.json()["scopes"])
    # a deleted service is no client any more
    assert (await hub.client.delete("/hub/api/services/notes", headers=admin)).status_code in (200, 204)
    async with hub.new_client() as browser:
        await hub.login(browser, "admin")
        assert (await browser.get(authorize_url("service-notes", callback))).status_code == 400
