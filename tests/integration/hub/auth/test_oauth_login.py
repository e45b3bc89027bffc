"""The `oauth` authenticator against a real OpenID Connect provider (oidc-provider): the login through
`/hub/login`'s button, the provider's own login and consent pages and `/hub/oauth_callback`; allowed and
admin groups; auth_state sealed at rest; state, replay, client-secret and ID-token failures; refreshes."""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, text

from fleethub.shared.authenticators import AuthUser, LoginRefused
from fleethub.shared.authenticators.oauth import OAuthAuthenticator
from fleethub.shared.crypt import SEALED, AuthStateCrypt
from fleethub.shared.db.models import User
from fleethub.shared.logins import stored_user
from fleethub.shared.net import free_port
from fleethub.shared.settings import ServiceSettings
from tests.support.hub import BASE_URL, Hub, hub_settings, running_hub
from tests.support.oidc_provider import OidcProvider, running_provider, sign_in_at_provider

pytestmark = pytest.mark.integration

CALLBACK = f"{BASE_URL}/hub/oauth_callback"
ACCOUNTS = {"alice": {"groups": ["staff", "hub-admins"]}, "bob": {"groups": ["staff"]},
            "eve": {"groups": ["visitors"]}}
CRYPT_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
STATE_COOKIE = "fleethub-oauth-state"


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with running_provider(redirect_uris=[CALLBACK], accounts=ACCOUNTS) as p:
        yield p


def oauth_hub_settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                       provider: OidcProvider, **oauth: Any) -> ServiceSettings:
    extra = oauth.pop("auth", {})
    auth = {"authenticator": "oauth", "crypt_key": [CRYPT_KEY], "enable_auth_state": True, "manage_groups": True,
            "oauth": provider.settings(scope=["openid", "email", "profile", "groups"], allowed_groups=["staff"],
                                       admin_groups=["hub-admins"], login_service="Test OIDC", **oauth)}
    auth.update(extra)
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth=auth)


@pytest.fixture
async def hub(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
              provider: OidcProvider) -> AsyncIterator[Hub]:
    async with running_hub(oauth_hub_settings(tmp_path, nats_url, database_url, nats_namespace, provider)) as h:
        yield h


def browser(hub: Hub) -> httpx.AsyncClient:
    """A browser: the hub's URLs reach the in-process apps, the provider's the real provider."""
    return httpx.AsyncClient(base_url=BASE_URL, mounts={BASE_URL: hub.transport}, trust_env=False)


async def start_login(client: httpx.AsyncClient) -> str:
    """Click "Sign in with …" on /hub/login; returns the provider's authorization URL the hub sent it to."""
    page = await client.get("/hub/login")
    assert page.status_code == 200 and "Sign in with Test OIDC" in page.text, page.text
    r = await client.get("/hub/oauth_login?next=/hub/home")
    assert r.status_code == 302, r.text
    return r.headers["location"]


async def log_in(client: httpx.AsyncClient, login: str) -> httpx.Response:
    """The whole redirect login of `login`; returns the hub's answer to the callback."""
    callback = await sign_in_at_provider(client, await start_login(client), login)
    assert callback.startswith(CALLBACK), callback
    return await client.get(callback)


async def test_login_through_the_provider_lands_on_home(hub: Hub, provider: OidcProvider) -> None:
    async with browser(hub) as alice:
        authorize = await start_login(alice)
        query = parse_qs(urlsplit(authorize).query)
        assert authorize.startswith(f"{provider.issuer}/auth?")
        assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
        assert query["redirect_uri"] == [CALLBACK] and query["client_id"] == [provider.client_id]
        assert query["scope"] == ["openid email profile groups"] and query["nonce"] and query["state"]
        assert "code_verifier" not in authorize and provider.client_secret not in authorize
        callback = await sign_in_at_provider(alice, authorize, "alice")
        r = await alice.get(callback)
        assert r.status_code == 302 and r.headers["location"] == "/hub/home", r.text
        assert alice.cookies.get("jupyterhub-hub-login", path="/hub/")
        home = await alice.get("/hub/home")
        assert home.status_code == 200 and "alice" in home.text
        me = (await alice.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(alice)})).json()
        assert me["name"] == "alice" and me["admin"] is True  # a member of hub-admins
        assert sorted(me["groups"]) == ["hub-admins", "staff"]  # auth.manage_groups

        # auth_state: sealed in PostgreSQL, and the tokens and claims inside
        async with hub.sessions() as s:
            raw = (await s.execute(text("SELECT auth_state::text FROM users WHERE name = 'alice'"))).scalar_one()
            stored = await stored_user(s, AuthStateCrypt(hub.settings.auth.crypt_keys), "alice")
        assert list(json.loads(raw)) == [SEALED] and "access_token" not in raw
        assert stored is not None and stored.auth_state is not None
        state = stored.auth_state
        assert state["access_token"] and state["refresh_token"] and state["id_token"]
        assert state["oauth_user"]["preferred_username"] == "alice" and state["expires_at"] > time.time()
        assert state["token_response"]["access_token"] == state["access_token"]

    async with browser(hub) as bob:  # in an allowed group, not an admin
        assert (await log_in(bob, "bob")).status_code == 302
        me = (await bob.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(bob)})).json()
        assert me["name"] == "bob" and me["admin"] is False


async def test_user_outside_the_allowed_groups_is_refused(hub: Hub) -> None:
    async with browser(hub) as eve:
        r = await log_in(eve, "eve")
        assert r.status_code == 403 and "User eve is not allowed to use this hub" in r.text
        assert not eve.cookies.get("jupyterhub-hub-login", path="/hub/")
    async with hub.sessions() as s:
        assert (await s.execute(select(User.id).where(User.name == "eve"))).first() is None


async def test_state_must_match_this_browser(hub: Hub) -> None:
    async with browser(hub) as victim, browser(hub) as attacker:
        callback = await sign_in_at_provider(attacker, await start_login(attacker), "bob")
        # the attacker's callback (code and state) opened in the victim's browser: no state cookie there
        r = await victim.get(callback)
        assert r.status_code == 400 and "not started in this browser" in r.text
        # the victim started a login of their own: the attacker's state is not theirs
        await start_login(victim)
        r = await victim.get(callback)
        assert r.status_code == 400 and "state mismatch" in r.text
        assert not victim.cookies.get("jupyterhub-hub-login", path="/hub/")
        code = parse_qs(urlsplit(callback).query)["code"][0]
        await start_login(victim)
        r = await victim.get("/hub/oauth_callback", params={"code": code, "state": "forged"})
        assert r.status_code == 400 and "state mismatch" in r.text


async def test_a_replayed_code_is_refused(hub: Hub) -> None:
    async with browser(hub) as bob:
        callback = await sign_in_at_provider(bob, await start_login(bob), "bob")
        state_cookie = bob.cookies.get(STATE_COOKIE, path="/hub/")
        assert state_cookie and (await bob.get(callback)).status_code == 302
    async with browser(hub) as replay:  # the callback and its state cookie captured and sent again
        replay.cookies.set(STATE_COOKIE, state_cookie, domain="127.0.0.1", path="/hub/")
        r = await replay.get(callback)
        assert r.status_code == 403 and "did not accept the sign-in code" in r.text and "invalid_grant" in r.text
        assert not replay.cookies.get("jupyterhub-hub-login", path="/hub/")


async def test_wrong_client_secret_gets_a_clear_page(tmp_path: Path, nats_url: str, database_url: str,
                                                     nats_namespace: str, provider: OidcProvider,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    settings = oauth_hub_settings(tmp_path, nats_url, database_url, nats_namespace, provider,
                                  client_secret="not-the-secret")
    async with running_hub(settings) as hub, browser(hub) as bob:
        r = await log_in(bob, "bob")
        page = html.unescape(r.text)
        assert r.status_code == 502 and "refused the hub's credentials (invalid_client)" in page
        assert "client id and secret" in page and "not-the-secret" not in page
    assert "not-the-secret" not in caplog.text and "auth.oauth.client_id" in caplog.text


async def test_auto_login_goes_straight_to_the_provider(tmp_path: Path, nats_url: str, database_url: str,
                                                        nats_namespace: str, provider: OidcProvider) -> None:
    settings = oauth_hub_settings(tmp_path, nats_url, database_url, nats_namespace, provider,
                                  auth={"auto_login": True})
    async with running_hub(settings) as hub, browser(hub) as bob:
        r = await bob.get("/hub/login?next=/hub/token")
        assert r.status_code == 302 and r.headers["location"] == "/hub/oauth_login?next=/hub/token"
        r = await bob.get(r.headers["location"])
        assert r.status_code == 302 and r.headers["location"].startswith(f"{provider.issuer}/auth?")
        back = await bob.get(await sign_in_at_provider(bob, r.headers["location"], "bob"))
        assert back.status_code == 302 and back.headers["location"] == "/hub/token"


async def test_provider_away_gives_503(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                                       provider: OidcProvider) -> None:
    settings = oauth_hub_settings(tmp_path, nats_url, database_url, nats_namespace, provider,
                                  issuer=f"http://127.0.0.1:{free_port()}")
    async with running_hub(settings) as hub, browser(hub) as bob:
        r = await bob.get("/hub/oauth_login")
        assert r.status_code == 503 and "Test OIDC cannot be reached right now" in r.text


async def test_client_secret_post_and_claims_from_the_id_token(tmp_path: Path, nats_url: str, database_url: str,
                                                               nats_namespace: str) -> None:
    # a provider that only takes client_secret_post, with the user's claims in its ID token
    with running_provider(redirect_uris=[CALLBACK], accounts=ACCOUNTS, token_endpoint_auth_method="client_secret_post",
                          id_token_claims=True) as post_only:
        settings = oauth_hub_settings(tmp_path, nats_url, database_url, nats_namespace, post_only,
                                      basic_auth=False, userdata_from_id_token=True)
        async with running_hub(settings) as hub, browser(hub) as bob:
            assert (await log_in(bob, "bob")).status_code == 302
            async with hub.sessions() as s:
                stored = await stored_user(s, AuthStateCrypt(hub.settings.auth.crypt_keys), "bob")
            assert stored is not None and stored.auth_state is not None
            claims = stored.auth_state["oauth_user"]
            assert claims["groups"] == ["staff"] and claims["aud"] == post_only.client_id and "nonce" in claims


async def authorized_code(authenticator: OAuthAuthenticator, client: httpx.AsyncClient,
                          login: str) -> tuple[dict[str, str], dict[str, str]]:
    """A code for `login` straight from the authenticator's own authorization URL: (callback params, kept)."""
    redirect = await authenticator.authorize_url(CALLBACK, "state-1")
    callback = await sign_in_at_provider(client, redirect.url, login)
    return {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}, redirect.keep


async def test_id_token_checks(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                               provider: OidcProvider) -> None:
    settings = oauth_hub_settings(tmp_path, nats_url, database_url, nats_namespace, provider)
    authenticator = OAuthAuthenticator(settings)
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            params, kept = await authorized_code(authenticator, client, "bob")
            with pytest.raises(LoginRefused, match="ID token did not pass"):  # another login's nonce
                await authenticator.callback(params, {**kept, "nonce": "another-nonce"}, CALLBACK)
            params, kept = await authorized_code(authenticator, client, "bob")
            with pytest.raises(LoginRefused, match="did not accept the sign-in code"):  # another PKCE verifier
                await authenticator.callback(params, {**kept, "code_verifier": "x" * 64}, CALLBACK)
            params, kept = await authorized_code(authenticator, client, "bob")
            assert params["iss"] == provider.issuer
            with pytest.raises(LoginRefused, match="did not come from"):  # RFC 9207: another provider's answer
                await authenticator.callback({**params, "iss": "https://other.example.org"}, kept, CALLBACK)
            user = await authenticator.callback(params, kept, CALLBACK)
            assert user.name == "bob" and user.groups == ["staff"] and user.admin is False
            assert user.auth_state is not None
            # an ID token re-signed with a key that is not the provider's, under the provider's key id
            forged = forge(user.auth_state["id_token"])
            with pytest.raises(LoginRefused, match="BadSignatureError"):
                await authenticator.id_token_claims({"id_token": forged}, nonce=None)
    finally:
        await authenticator.close()


def forge(id_token: str) -> str:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    header, payload, _ = id_token.split(".")
    pad = "=" * (-len(header) % 4)
    head = json.loads(base64.urlsafe_b64decode(header + pad))
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    key = RSAKey.generate_key(2048, parameters={"kid": head["kid"]})
    return jwt.encode({"alg": head["alg"], "kid": head["kid"]}, claims, key)


async def test_refresh_user(hub: Hub, provider: OidcProvider) -> None:
    async with browser(hub) as alice:
        assert (await log_in(alice, "alice")).status_code == 302
    crypt = AuthStateCrypt(hub.settings.auth.crypt_keys)
    async with hub.sessions() as s:
        user = await stored_user(s, crypt, "alice")
    assert user is not None and user.auth_state is not None
    state = user.auth_state
    authenticator = OAuthAuthenticator(hub.settings)
    try:
        # a good access token: the claims are read again (groups, admin), the tokens kept
        same = await authenticator.refresh_user(user)
        assert isinstance(same, AuthUser) and same.auth_state is not None
        assert same.auth_state["access_token"] == state["access_token"] and same.admin is True
        assert same.groups == ["staff", "hub-admins"]
        # expired: the refresh token gets new tokens from the provider, which work
        expired = user.with_(auth_state={**state, "expires_at": int(time.time()) - 10})
        fresh = await authenticator.refresh_user(expired)
        assert isinstance(fresh, AuthUser) and fresh.name == "alice" and fresh.auth_state is not None
        new = fresh.auth_state
        assert new["access_token"] != state["access_token"] and new["expires_at"] > time.time()
        assert new["refresh_token"] and new["oauth_user"]["sub"] == "alice" and fresh.groups == ["staff", "hub-admins"]
        assert await authenticator.fetch_userdata(new["access_token"]) is not None
        # not expired by its clock, but the provider does not know it (as after a restart): refreshed too
        unknown = fresh.with_(auth_state={**new, "access_token": "an-access-token-the-provider-never-issued"})
        again = await authenticator.refresh_user(unknown)
        assert isinstance(again, AuthUser) and again.auth_state is not None
        assert again.auth_state["access_token"] not in (new["access_token"], state["access_token"])
        # the refresh token revoked (the provider revokes its grant's tokens with it): log in again
        await provider.revoke(again.auth_state["refresh_token"], "refresh_token")
        assert await authenticator.fetch_userdata(again.auth_state["access_token"]) is None
        assert await authenticator.refresh_user(again) is False
        no_refresh = {**state, "refresh_token": None, "expires_at": int(time.time()) - 10}
        assert await authenticator.refresh_user(user.with_(auth_state=no_refresh)) is False
        assert await authenticator.refresh_user(AuthUser("alice")) is True  # nothing to check
    finally:
        await authenticator.close()


async def test_short_lived_access_tokens_are_refreshed_before_they_expire(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    with running_provider(redirect_uris=[CALLBACK], accounts=ACCOUNTS, access_token_ttl=30) as short:
        settings = oauth_hub_settings(tmp_path, nats_url, database_url, nats_namespace, short)
        authenticator = OAuthAuthenticator(settings)
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                params, kept = await authorized_code(authenticator, client, "bob")
            user = await authenticator.callback(params, kept, CALLBACK)
            assert user.auth_state is not None and user.auth_state["expires_at"] <= time.time() + 30
            refreshed = await authenticator.refresh_user(user)  # within the leeway: refreshed now
            assert isinstance(refreshed, AuthUser) and refreshed.auth_state is not None
            assert refreshed.auth_state["access_token"] != user.auth_state["access_token"]
        finally:
            await authenticator.close()
