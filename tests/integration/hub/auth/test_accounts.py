"""Password accounts belong to the user row: a rename carries the account, a delete removes it, and a login
never lands on (or recreates) a user other than the one whose password was checked. The security review's
sequences, against the real auth and api apps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from fleethub.shared.accounts import set_password
from fleethub.shared.db.models import Account, ApiToken, LoginSession, Role, User
from tests.support.cluster import wait_for
from tests.support.hub import XSRF_FIELD, Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration


async def _signup(hub: Hub, username: str, password: str) -> int:
    async with hub.new_client() as c:
        page = await c.get("/hub/signup")
        if page.status_code != 200:
            return page.status_code
        m = XSRF_FIELD.search(page.text)
        assert m, page.text
        r = await c.post("/hub/signup", data={"username": username, "password": password, "_xsrf": m.group(1)})
        return r.status_code


async def _whoami(hub: Hub, c: httpx.AsyncClient) -> str:
    r = await c.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(c)})
    assert r.status_code == 200, r.text
    return str(r.json()["name"])


async def _user_id(hub: Hub, name: str) -> int | None:
    async with hub.sessions() as s:
        return (await s.execute(select(User.id).where(User.name == name))).scalar()


async def _token_by_auth(hub: Hub, name: str, password: str) -> int:
    async with hub.new_client() as c:
        r = await c.post(f"/hub/api/users/{name}/tokens", json={"auth": {"username": name, "password": password}})
        return r.status_code


async def _user_admin(hub: Hub, name: str) -> dict[str, str]:
    """`name` holding only admin:users (through a role, as the review's carol)."""
    admin = await hub.headers_for("admin", admin=True)
    assert (await hub.client.post(f"/hub/api/users/{name}", headers=admin)).status_code == 201
    async with hub.sessions() as s, s.begin():
        s.add(Role(name="user-admin", scopes=["admin:users"]))
    r = await hub.client.patch(f"/hub/api/users/{name}", json={"roles": ["user-admin"]}, headers=admin)
    assert r.status_code == 200
    headers = await hub.headers_for(name, scopes=["inherit"])

    async def holds() -> bool:
        return (await hub.client.get("/hub/api/users/admin", headers=headers)).status_code == 200

    await wait_for(holds, timeout=3, interval=0.02, what=f"{name} holds admin:users")
    return headers


async def test_review_carol2_takeover_of_vic_is_refused(tmp_path: Path, nats_url: str, database_url: str,
                                                        nats_namespace: str) -> None:
    """The review's sequence: the attacker signs up carol2; carol (admin:users only) deletes carol2 (204) and
    renames vic to carol2 (200); the attacker's password must not open vic's row, tokens or servers."""
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"open_signup": True})
    async with running_hub(settings) as hub:
        c = hub.client
        carol = await _user_admin(hub, "carol")
        async with hub.sessions() as s, s.begin():
            await set_password(s, "vic", "vic-password")
        vic_token = await hub.headers_for("vic")
        vic_id = await _user_id(hub, "vic")

        assert await _signup(hub, "carol2", "attacker-password") == 201
        assert (await c.delete("/hub/api/users/carol2", headers=carol)).status_code == 204
        async with hub.sessions() as s:  # the account went with its user
            # admin, alice, mallory, vic
            assert (await s.execute(select(func.count()).select_from(Account))).scalar_one() == 4
        r = await c.patch("/hub/api/users/vic", json={"name": "carol2"}, headers=carol)
        assert r.status_code == 200 and r.json()["name"] == "carol2"

        async with hub.new_client() as attacker:
            r = await hub.login(attacker, "carol2", "attacker-password")
            assert r.status_code == 403 and "jupyterhub-hub-login" not in r.cookies
        assert await _token_by_auth(hub, "carol2", "attacker-password") == 403
        async with hub.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(LoginSession))).scalar_one() == 0
            tokens = (await s.execute(select(func.count()).select_from(ApiToken).where(
                ApiToken.user_id == vic_id, ApiToken.note != "test"))).scalar_one()
            assert tokens == 0  # no token was issued to the attacker

        # vic, now called carol2, keeps the row, the password and the tokens
        assert await _user_id(hub, "carol2") == vic_id
        async with hub.new_client() as v:
            assert (await hub.login(v, "carol2", "vic-password")).status_code == 302
            assert await _whoami(hub, v) == "carol2"
        assert (await c.get("/hub/api/user", headers=vic_token)).json()["name"] == "carol2"


async def test_deleted_user_does_not_log_in_again(hub: Hub) -> None:
    """A deleted user's password opens nothing, and no user row comes back (sign-up is off here)."""
    admin = await hub.headers_for("admin", admin=True)
    alice_id = await _user_id(hub, "alice")
    assert alice_id is not None
    assert (await hub.client.delete("/hub/api/users/alice", headers=admin)).status_code == 204
    async with hub.new_client() as c:
        r = await hub.login(c, "alice", "alice-password")
        assert r.status_code == 403 and "Invalid username or password" in r.text
    assert await _token_by_auth(hub, "alice", "alice-password") == 403
    assert await _signup(hub, "alice", "alice-password") == 404
    assert await _user_id(hub, "alice") is None
    async with hub.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(Account).where(Account.user_id == alice_id))
                ).scalar_one() == 0


async def test_deleted_user_name_signs_up_afresh_only_with_open_signup(tmp_path: Path, nats_url: str,
                                                                       database_url: str, nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"open_signup": True})
    async with running_hub(settings) as hub:
        admin = await hub.headers_for("admin", admin=True)
        old_id = await _user_id(hub, "alice")
        await hub.token_for("alice")
        assert (await hub.client.delete("/hub/api/users/alice", headers=admin)).status_code == 204
        async with hub.new_client() as c:
            assert (await hub.login(c, "alice", "alice-password")).status_code == 403
        assert await _signup(hub, "alice", "new-alice-password") == 201
        new_id = await _user_id(hub, "alice")
        assert new_id is not None and new_id != old_id
        async with hub.new_client() as c:
            assert (await hub.login(c, "alice", "alice-password")).status_code == 403  # the old password is gone
            assert (await hub.login(c, "alice", "new-alice-password")).status_code == 302
        async with hub.sessions() as s:  # a new, empty user: none of the old one's tokens
            assert (await s.execute(select(func.count()).select_from(ApiToken).where(ApiToken.user_id == new_id))
                    ).scalar_one() == 0


async def test_rename_carries_the_account(hub: Hub) -> None:
    """The review's honest rename: frank → frank2; frank2 logs in with frank's password, `frank` opens nothing."""
    async with hub.sessions() as s, s.begin():
        await set_password(s, "frank", "frank-password")
    frank_id = await _user_id(hub, "frank")
    admin = await hub.headers_for("admin", admin=True)
    r = await hub.client.patch("/hub/api/users/frank", json={"name": "frank2"}, headers=admin)
    assert r.status_code == 200
    async with hub.new_client() as c:
        r = await hub.login(c, "frank", "frank-password")
        assert r.status_code == 403 and "jupyterhub-hub-login" not in r.cookies
    assert await _user_id(hub, "frank") is None  # no new, empty frank
    assert await _token_by_auth(hub, "frank", "frank-password") == 403
    async with hub.new_client() as c:
        assert (await hub.login(c, "frank2", "frank-password")).status_code == 302
        assert await _whoami(hub, c) == "frank2"
    assert await _user_id(hub, "frank2") == frank_id
    assert await _token_by_auth(hub, "frank2", "frank-password") == 201


async def test_login_racing_a_rename_lands_on_no_one(hub: Hub) -> None:
    """A rename commits while frank's login is checking the password: the login waits for it and then finds
    no `frank` (it neither recreates frank nor logs into frank2 under the old name)."""
    async with hub.sessions() as s, s.begin():
        await set_password(s, "frank", "frank-password")
    async with hub.new_client() as c:
        page = await c.get("/hub/login")
        m = XSRF_FIELD.search(page.text)
        assert m
        async with hub.sessions() as rename:
            await rename.begin()
            await rename.execute(update(User).where(User.name == "frank").values(name="frank2"))
            login = asyncio.create_task(c.post("/hub/login", data={
                "username": "frank", "password": "frank-password", "_xsrf": m.group(1)}))
            await asyncio.sleep(0.5)
            assert not login.done()  # held by the uncommitted rename of the row it read
            await rename.commit()
        r = await login
    assert r.status_code == 403
    assert await _user_id(hub, "frank") is None
    async with hub.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(LoginSession))).scalar_one() == 0


async def test_login_holds_off_a_rename_until_it_is_recorded(hub: Hub) -> None:
    """The other order: while a login holds frank's row (password checked, session not yet written), a rename
    waits; the session it then records belongs to the renamed user."""
    from fleethub.shared.authenticators import PasswordAuthenticator

    async with hub.sessions() as s, s.begin():
        await set_password(s, "frank", "frank-password")
    admin = await hub.headers_for("admin", admin=True)
    async with hub.sessions() as login:
        await login.begin()
        found = await PasswordAuthenticator(hub.settings).authenticate(login, "frank", "frank-password")
        assert found is not None and found.name == "frank"
        rename = asyncio.create_task(hub.client.patch("/hub/api/users/frank", json={"name": "frank2"}, headers=admin))
        await asyncio.sleep(0.5)
        assert not rename.done()  # FOR KEY SHARE on frank's row holds off the change of its unique name
        await login.rollback()
    assert (await rename).status_code == 200
