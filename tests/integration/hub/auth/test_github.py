"""The `github` authenticator through the hub's redirect login, against the GitHub stand-in
(tests/support/github_standin.py): sign-in, organizations and teams, admins, refused codes and credentials,
auth_state at rest, refresh, and the login time."""

from __future__ import annotations

import html
import json
import re
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select, text

from fleethub.shared.authenticators import AuthUser, LoginRefused
from fleethub.shared.authenticators.github import GitHubAuthenticator
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import Group, GroupMember, User
from fleethub.shared.events import UserLoggedIn
from fleethub.shared.logins import stored_user
from fleethub.shared.settings import ServiceSettings
from tests.support.github_standin import App, GitHubStandin, running_github
from tests.support.hub import BASE_URL, Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

CALLBACK = f"{BASE_URL}/hub/oauth_callback"
HUB_APP = App("hub-client-id", "hub-client-secret", CALLBACK)
OTHER_APP = App("other-client-id", "other-client-secret", CALLBACK)
BUTTON = re.compile(r'href="([^"]+)">Sign in with GitHub<')
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
STATE_COOKIE = "fleethub-oauth-state"
HubFactory = Callable[..., AbstractAsyncContextManager[Hub]]


@pytest.fixture
def github() -> Iterator[GitHubStandin]:
    with running_github([HUB_APP, OTHER_APP]) as standin:
        yield standin


SettingsFactory = Callable[..., ServiceSettings]


@pytest.fixture
def settings_for(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                 github: GitHubStandin) -> SettingsFactory:
    """Settings of a hub logging in with GitHub: `settings_for(auth={...}, **github_section)`."""

    def make(auth: dict[str, Any] | None = None, **section: Any) -> ServiceSettings:
        github_section = {"client_id": HUB_APP.client_id, "client_secret": HUB_APP.client_secret,
                          "github_url": github.url, **section}
        return hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"authenticator": "github", "github": github_section, **(auth or {})})

    return make


@pytest.fixture
def make_hub(settings_for: SettingsFactory) -> HubFactory:
    """A running hub logging in with GitHub: `make_hub(auth={...}, **github_section)`."""

    @asynccontextmanager
    async def make(auth: dict[str, Any] | None = None, **section: Any) -> AsyncIterator[Hub]:
        async with running_hub(settings_for(auth, **section)) as hub:
            yield hub

    return make


async def start(browser: httpx.AsyncClient) -> str:
    """The hub's login page → its "Sign in with GitHub" button → the stand-in's authorize URL."""
    page = await browser.get("/hub/login")
    button = BUTTON.search(page.text)
    assert page.status_code == 200 and button, page.text
    r = await browser.get(html.unescape(button.group(1)))
    assert r.status_code == 302, r.text
    return r.headers["location"]


async def authorize(authorize_url: str, login: str, *, approve: bool = True, **override: str) -> str:
    """At the stand-in: open the authorize page, choose `login`, post; the URL it sends the browser back to."""
    async with httpx.AsyncClient() as gh:
        page = await gh.get(authorize_url)
        assert page.status_code == 200, page.text
        fields = {k: html.unescape(v) for k, v in HIDDEN.findall(page.text)}
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
        r = await gh.post(f"{origin}/login/oauth/authorize",
                          data={**fields, **override, "login": login, "authorize": "1" if approve else "0"})
    assert r.status_code == 302, r.text
    return r.headers["location"]


async def sign_in(browser: httpx.AsyncClient, login: str) -> httpx.Response:
    """A whole login: the hub's answer to the callback."""
    return await browser.get(await authorize(await start(browser), login))


async def whoami(hub: Hub, browser: httpx.AsyncClient) -> dict[str, Any]:
    r = await browser.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(browser)})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_sign_in_with_github(make_hub: HubFactory) -> None:
    async with make_hub(allowed_organizations=["fleet"]) as hub:
        url = await start(hub.client)
        query = parse_qs(urlsplit(url).query)
        assert url.startswith(f"{hub.settings.auth.github.github_url}/login/oauth/authorize?")
        assert query["client_id"] == [HUB_APP.client_id] and query["redirect_uri"] == [CALLBACK]
        assert query["scope"] == ["read:user read:org"] and query["code_challenge_method"] == ["S256"]
        assert query["state"] and "client_secret" not in query and HUB_APP.client_secret not in url
        back = await authorize(url, "Alice")
        assert back.startswith(f"{CALLBACK}?code=")
        r = await hub.client.get(back)
        assert r.status_code == 302 and r.headers["location"] == "/hub/home", r.text
        assert hub.client.cookies.get("jupyterhub-hub-login")
        assert (await hub.client.get("/hub/home")).status_code == 200
        me = await whoami(hub, hub.client)
        assert me["name"] == "alice" and me["admin"] is False
        (event,) = await hub.events(1)
        assert isinstance(event, UserLoggedIn) and event.name == "alice" and event.authenticator == "github"


async def test_allowed_organizations_by_org(make_hub: HubFactory) -> None:
    async with make_hub(allowed_organizations=["fleet"]) as hub:
        # Alice's membership is private (seen with read:org), bob's public, dave's private with a pending team
        for login in ("Alice", "bob", "dave"):
            async with hub.new_client() as browser:
                r = await sign_in(browser, login)
                assert r.status_code == 302 and r.headers["location"] == "/hub/home", (login, r.text)
        for login in ("carol", "erin"):
            async with hub.new_client() as browser:
                r = await sign_in(browser, login)
                assert r.status_code == 403 and f"User {login} is not allowed to use this hub" in r.text
                assert "jupyterhub-hub-login" not in r.cookies


async def test_allowed_organizations_by_team(make_hub: HubFactory) -> None:
    async with make_hub(allowed_organizations=["fleet:researchers", "nowhere"],
                        auth={"allowed_users": ["erin"], "allow_existing_users": False}) as hub:
        expected = {
            "bob": 302,  # an active member of fleet:researchers
            "dave": 403,  # only invited to it (pending)
            "carol": 403,  # in elsewhere:researchers, a team of the same name in another organization
            "Alice": 403,  # in fleet, but not in that team
            "erin": 302,  # in no organization, but in allowed_users: the hub's own rules still apply
        }
        for login, status in expected.items():
            async with hub.new_client() as browser:
                r = await sign_in(browser, login)
                assert r.status_code == status, (login, r.text)
                if status == 403:
                    assert f"User {login.lower()} is not allowed to use this hub" in r.text


async def test_without_organizations_only_the_hub_rules_admit(make_hub: HubFactory) -> None:
    async with make_hub(auth={"allowed_users": ["carol"]}, basic_auth=True) as hub:  # credentials in HTTP Basic
        url = await start(hub.client)
        assert parse_qs(urlsplit(url).query)["scope"] == ["read:user"]  # no read:org when nothing needs it
        assert (await hub.client.get(await authorize(url, "carol"))).status_code == 302
        async with hub.new_client() as browser:
            assert (await sign_in(browser, "bob")).status_code == 403


async def test_admins_and_groups_from_teams(make_hub: HubFactory, github: GitHubStandin) -> None:
    github.page_size = 1  # every list comes a page at a time: the Link headers must be followed
    async with make_hub(allowed_organizations=["fleet"], admin_groups=["fleet:hub-admins"],
                        auth={"manage_groups": True}) as hub:
        async with hub.new_client() as browser:
            assert (await sign_in(browser, "Alice")).status_code == 302
            assert (await whoami(hub, browser))["admin"] is True
        async with hub.new_client() as browser:
            assert (await sign_in(browser, "bob")).status_code == 302
            assert (await whoami(hub, browser))["admin"] is False
        async with hub.sessions() as s:
            rows = (await s.execute(
                select(User.name, Group.name).join(GroupMember, GroupMember.user_id == User.id)
                .join(Group, Group.id == GroupMember.group_id).order_by(User.name, Group.name))).all()
        assert [tuple(r) for r in rows] == [
            ("alice", "fleet"), ("alice", "fleet:gpu-users"), ("alice", "fleet:hub-admins"), ("alice", "fleet:ops"),
            ("bob", "fleet"), ("bob", "fleet:researchers")]


async def test_refused_codes(make_hub: HubFactory) -> None:
    async with make_hub(allowed_organizations=["fleet"]) as hub:
        # a code used twice: the second exchange is refused by GitHub (the state cookie put back to reach it)
        url = await start(hub.client)
        cookie = hub.client.cookies.get(STATE_COOKIE)
        back = await authorize(url, "bob")
        assert (await hub.client.get(back)).status_code == 302
        hub.client.cookies.set(STATE_COOKIE, cookie or "", path="/hub/")
        again = await hub.client.get(back)
        assert again.status_code == 403 and "The code passed is incorrect or expired" in again.text
        assert "bad_verification_code" in again.text
        # a code GitHub issued to another OAuth app, delivered to this hub's callback
        async with hub.new_client() as browser:
            url = await start(browser)
            other = url.replace(f"client_id={HUB_APP.client_id}", f"client_id={OTHER_APP.client_id}")
            back = await authorize(other, "bob")
            r = await browser.get(back)
            assert r.status_code == 403 and "bad_verification_code" in r.text
            assert "jupyterhub-hub-login" not in r.cookies
        # the user said no at GitHub
        async with hub.new_client() as browser:
            r = await browser.get(await authorize(await start(browser), "bob", approve=False))
            assert r.status_code == 403 and "GitHub did not sign you in: The user has denied" in r.text
        # no code at all
        async with hub.new_client() as browser:
            state = parse_qs(urlsplit(await start(browser)).query)["state"][0]
            r = await browser.get(f"/hub/oauth_callback?{urlencode({'state': state})}")
            assert r.status_code == 400 and "GitHub sent no authorization code" in r.text


async def test_codes_are_bound_to_pkce_and_redirect_uri(settings_for: SettingsFactory,
                                                         github: GitHubStandin) -> None:
    auth = GitHubAuthenticator(settings_for(allowed_organizations=["fleet"]))
    try:
        redirect = await auth.authorize_url(CALLBACK, "state-1")
        code = _code(await authorize(redirect.url, "bob"))
        with pytest.raises(LoginRefused, match="code_verifier does not match") as refused:
            await auth.callback({"code": code, "state": "state-1"}, {"code_verifier": "x" * 64}, CALLBACK)
        assert refused.value.status == 403
        with pytest.raises(LoginRefused, match="bad_verification_code"):  # spent by that attempt
            await auth.callback({"code": code}, redirect.keep, CALLBACK)
        redirect = await auth.authorize_url(CALLBACK, "state-2")
        code = _code(await authorize(redirect.url, "bob"))
        with pytest.raises(LoginRefused, match="redirect_uri_mismatch") as refused:
            await auth.callback({"code": code}, redirect.keep, f"{CALLBACK}/elsewhere")
        assert refused.value.status == 502 and "administrators" in refused.value.message
        redirect = await auth.authorize_url(CALLBACK, "state-3")
        user = await auth.callback({"code": _code(await authorize(redirect.url, "bob"))}, redirect.keep, CALLBACK)
        assert user.name == "bob" and user.allowed is True and user.groups is None
    finally:
        await auth.close()
    # what the token endpoint says to a client that does not ask for JSON (authlib asks)
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{github.url}/login/oauth/access_token",
                              data={"client_id": HUB_APP.client_id, "client_secret": HUB_APP.client_secret,
                                    "code": "unknown"})
    assert r.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(r.text)["error"] == ["bad_verification_code"]


def _code(callback_url: str) -> str:
    return parse_qs(urlsplit(callback_url).query)["code"][0]


async def test_wrong_client_secret(make_hub: HubFactory) -> None:
    async with make_hub(client_secret="not-the-secret", allowed_organizations=["fleet"]) as hub:
        r = await sign_in(hub.client, "Alice")
        assert r.status_code == 502 and "jupyterhub-hub-login" not in r.cookies
        assert "GitHub refused this hub's credentials (incorrect_client_credentials" in html.unescape(r.text)
        assert "administrators" in r.text and "not-the-secret" not in r.text


async def test_auth_state_is_sealed_and_refresh_sees_revocation(make_hub: HubFactory, github: GitHubStandin) -> None:
    key = secrets.token_hex(32)
    async with make_hub(allowed_organizations=["fleet:hub-admins"], populate_teams_in_auth_state=True,
                        auth={"crypt_key": [key], "enable_auth_state": True}) as hub:
        assert (await sign_in(hub.client, "Alice")).status_code == 302
        async with hub.sessions() as s:
            raw = (await s.execute(text("SELECT auth_state::text FROM users WHERE name = 'alice'"))).scalar_one()
            (token,) = github.tokens_of("Alice")
            assert list(json.loads(raw)) == ["fleethub:sealed"] and token not in raw and "Alice" not in raw
            user = await stored_user(s, AuthStateCrypt(hub.settings.auth.crypt_keys), "alice")
        assert user is not None and user.auth_state is not None
        state = user.auth_state
        assert state["access_token"] == token and state["token_type"] == "bearer"
        assert sorted(state["scope"]) == ["read:org", "read:user"]
        assert state["github_user"]["login"] == "Alice" and state["github_user"]["id"] == 1001
        assert sorted(t["slug"] for t in state["teams"]) == ["gpu-users", "hub-admins", "ops"]

        authenticator = GitHubAuthenticator(hub.settings)
        try:
            fresh = await authenticator.refresh_user(user)
            assert not isinstance(fresh, bool)
            assert fresh.name == "alice" and fresh.allowed is True and fresh.auth_state is not None
            assert fresh.auth_state["access_token"] == token and len(fresh.auth_state["teams"]) == 3
            async with httpx.AsyncClient(auth=(HUB_APP.client_id, HUB_APP.client_secret)) as app:
                r = await app.request("DELETE", f"{github.api_url}/applications/{HUB_APP.client_id}/token",
                                      json={"access_token": token})
                assert r.status_code == 204
            assert await authenticator.refresh_user(user) is False
        finally:
            await authenticator.close()


async def test_refresh_keeps_the_session_while_github_is_away(settings_for: SettingsFactory) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        away = f"http://127.0.0.1:{closed.getsockname()[1]}"
        auth = GitHubAuthenticator(settings_for(github_url=away))
        try:
            user = AuthUser("bob", auth_state={"access_token": "gho_whatever"})
            assert await auth.refresh_user(user) is True
            assert await auth.refresh_user(AuthUser("bob")) is True  # nothing stored to check
        finally:
            await auth.close()
