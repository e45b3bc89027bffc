"""Refreshing logins (`Authenticator.refresh_user`, a third-party authenticator of tests/support scripted by
the test): in the auth service's background every `auth.auth_refresh_age`, and in the api before a spawn
(`auth.refresh_pre_spawn`). An updated user is recorded; an expired one loses their login sessions."""

from __future__ import annotations

import asyncio
import base64
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from fleethub.services.auth.refresh import Refresher, claim
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import ApiToken, LoginSession, Server, User
from fleethub.shared.events import TokenRevoked, UserLoggedOut, utcnow
from fleethub.shared.security import hash_token, new_token
from tests.support.cluster import wait_for
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.third_party_auth import REFRESH, refresh_calls, script

pytestmark = pytest.mark.integration

AUTHENTICATOR = "tests.support.third_party_auth:ScriptedAuthenticator"
EXPIRED = "Your login has expired: log in again to start a server"


def _settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, key: bytes,
              **auth: Any) -> Any:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                        auth={"authenticator": AUTHENTICATOR, "enable_auth_state": True,
                              "crypt_key": [base64.urlsafe_b64encode(key).decode()], **auth})


async def _login(hub: Hub, name: str) -> httpx.AsyncClient:
    client = hub.new_client()
    r = await hub.login(client, name, f"{name}-password")
    assert r.status_code == 302, r.text
    return client


async def _me(hub: Hub, client: httpx.AsyncClient) -> int:
    """The status of GET /hub/api/user with the browser's cookie."""
    xsrf = client.cookies.get("_xsrf", path="/hub/") or ""
    return (await client.get("/hub/api/user", headers={"X-XSRFToken": xsrf})).status_code


async def _state(hub: Hub, crypt: AuthStateCrypt, name: str) -> tuple[Any, datetime | None]:
    async with hub.sessions() as s:
        stored, refreshed = (await s.execute(
            select(User.auth_state, User.auth_refreshed).where(User.name == name))).one()
    return crypt.open(stored, name), refreshed


async def _sessions_of(hub: Hub, name: str) -> int:
    async with hub.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(LoginSession).join(User)
                                    .where(User.name == name))).scalar_one())


async def _session_token(hub: Hub, name: str) -> int:
    """A token issued to the user's login session (as their server's OAuth token is); its id."""
    async with hub.sessions() as s, s.begin():
        uid, sid = (await s.execute(select(User.id, LoginSession.session_id).join(LoginSession)
                                    .where(User.name == name))).one()
        token = ApiToken(user_id=uid, hashed=hash_token(new_token()), kind="oauth", scopes=["inherit"],
                         session_id=sid, note="server oauth")
        s.add(token)
        await s.flush()
        return int(token.id)


async def test_the_background_refresh_updates_auth_state_and_an_expired_login_ends(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    key = secrets.token_bytes(32)
    crypt = AuthStateCrypt([key])
    settings = _settings(tmp_path, nats_url, database_url, nats_namespace, key, auth_refresh_age=1)
    async with running_hub(settings) as hub:
        alice = await _login(hub, "alice")
        bob = await _login(hub, "bob")
        await bob.get("/hub/logout")  # auth_state kept, but no live login: never refreshed
        state, at_login = await _state(hub, crypt, "alice")
        assert state == {"token": "login-alice"} and at_login is not None

        script(tmp_path, REFRESH, alice={"auth_state": {"token": "refreshed-alice"}})

        async def refreshed() -> bool:
            return (await _state(hub, crypt, "alice"))[0] == {"token": "refreshed-alice"}

        await wait_for(refreshed, timeout=15, what="the background refresh stored the new auth_state")
        again = (await _state(hub, crypt, "alice"))[1]
        assert again is not None and again > at_login
        assert await _me(hub, alice) == 200, "a refreshed login holds"

        token_id = await _session_token(hub, "alice")
        script(tmp_path, REFRESH, alice=False)

        async def logged_out() -> bool:
            return await _me(hub, alice) == 403

        await wait_for(logged_out, timeout=15, what="the expired login no longer works")
        assert await _sessions_of(hub, "alice") == 0
        async with hub.sessions() as s:
            assert (await s.execute(select(ApiToken.id).where(ApiToken.id == token_id))).first() is None
        events = await hub.events(50, timeout=1.0)
        assert any(isinstance(e, UserLoggedOut) and e.name == "alice" for e in events)
        assert any(isinstance(e, TokenRevoked) and e.token_id == token_id for e in events)
        assert "bob" not in refresh_calls(tmp_path)
        await alice.aclose()
        await bob.aclose()


async def test_claims_are_disjoint_across_replicas_and_an_age_of_zero_runs_no_loop(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    key = secrets.token_bytes(32)
    settings = _settings(tmp_path, nats_url, database_url, nats_namespace, key, auth_refresh_age=0)
    async with running_hub(settings) as hub:
        runtime = hub.api_state["runtime"]
        due = [f"due{i}" for i in range(30)]
        async with hub.sessions() as s, s.begin():
            for name in [*due, "fresh", "stateless"]:
                state = None if name == "stateless" else AuthStateCrypt([key]).seal({"token": name})
                uid = (await s.execute(insert(User).values(name=name, auth_state=state,
                                                           auth_refreshed=utcnow() if name == "fresh" else None)
                                       .returning(User.id))).scalar_one()
                s.add(LoginSession(user_id=uid, hashed=hash_token(new_token()), session_id=new_token()[:32],
                                   expires_at=utcnow().replace(year=utcnow().year + 1)))
        # three replicas claiming at once: every due user exactly once, the fresh and stateless ones never
        claims = await asyncio.gather(*(claim(runtime.sessions, 3600, limit=12) for _ in range(3)))
        claimed = [n for c in claims for n in c]
        assert sorted(claimed) == sorted(due), claims
        assert await claim(runtime.sessions, 3600) == []

        # auth_refresh_age = 0: the loop returns at once (the app does not even start it)
        refresher = Refresher(runtime, hub.api_state["authenticator"], AuthStateCrypt([key]))
        await asyncio.wait_for(refresher.run(), timeout=5)
        assert refresh_calls(tmp_path) == []


async def test_refresh_pre_spawn(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    key = secrets.token_bytes(32)
    crypt = AuthStateCrypt([key])
    settings = _settings(tmp_path, nats_url, database_url, nats_namespace, key, refresh_pre_spawn=True,
                         auth_refresh_age=0)
    async with running_hub(settings) as hub:
        alice = await _login(hub, "alice")
        script(tmp_path, REFRESH, alice={"auth_state": {"token": "fresh-for-spawn"}})
        r = await hub.client.post("/hub/api/users/alice/server", headers=await hub.headers_for("alice"))
        assert r.status_code == 202, r.text  # no spawner here: accepted
        assert refresh_calls(tmp_path) == ["alice"]
        assert (await _state(hub, crypt, "alice"))[0] == {"token": "fresh-for-spawn"}
        assert (await hub.spawn_command()).user == "alice"
        assert await _me(hub, alice) == 200

        bob = await _login(hub, "bob")
        script(tmp_path, REFRESH, bob=False)
        r = await hub.client.post("/hub/api/users/bob/server", headers=await hub.headers_for("bob"))
        assert r.status_code == 403 and r.json() == {"status": 403, "message": EXPIRED}
        assert await _me(hub, bob) == 403, "bob's login sessions ended"
        async with hub.sessions() as s:
            started = (await s.execute(select(Server.id).join(User).where(User.name == "bob"))).first()
        assert started is None, "nothing of the start was written"

        # the spawn form: an expired login of one's own goes back to the login page
        carol = await _login(hub, "carol")
        script(tmp_path, REFRESH, carol=False)
        xsrf = carol.cookies.get("_xsrf", path="/hub/")
        r = await carol.post("/hub/spawn", data={"_xsrf": xsrf or ""})
        assert r.status_code == 302 and r.headers["location"].startswith("/hub/login?next="), r.text
        assert await _me(hub, carol) == 403
        for c in (alice, bob, carol):
            await c.aclose()
