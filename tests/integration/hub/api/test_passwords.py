"""`PUT /hub/api/users/{name}/password`: admins set and reset, users change their own with the old password,
the rules refuse weak passwords with a clear 400, and sessions end as documented."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fleethub.shared.db.models import Role, User, UserRole
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration


async def _logged_in(client: httpx.AsyncClient) -> bool:
    """Whether the browser's login cookie still opens a session (the change-password page answers it)."""
    return (await client.get("/hub/change-password")).status_code == 200


async def test_admin_gives_an_api_created_user_a_password(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    assert (await hub.client.post("/hub/api/users/bob", headers=admin)).status_code == 201
    async with hub.new_client() as browser:  # no account yet: bob can not log in
        assert (await hub.login(browser, "bob", "bob-new-secret")).status_code == 403
    r = await hub.client.put("/hub/api/users/bob/password", json={"password": "bob-new-secret"}, headers=admin)
    assert r.status_code == 200 and r.json() == {"name": "bob", "sessions_ended": 0}
    assert "bob-new-secret" not in r.text
    async with hub.new_client() as browser:
        r = await hub.login(browser, "bob", "bob-new-secret")
        assert r.status_code == 302 and r.headers["location"] == "/hub/home"
    r = await hub.client.put("/hub/api/users/nobody/password", json={"password": "whatever-secret"}, headers=admin)
    assert r.status_code == 404 and r.json()["message"] == "No such user: nobody"


async def test_an_admin_reset_ends_every_session_of_the_user(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    async with hub.new_client() as one, hub.new_client() as two:
        for browser in (one, two):
            assert (await hub.login(browser, "alice")).status_code == 302
            assert await _logged_in(browser)
        r = await hub.client.put("/hub/api/users/alice/password", json={"password": "reset-by-admin"}, headers=admin)
        assert r.status_code == 200 and r.json()["sessions_ended"] == 2
        assert not await _logged_in(one) and not await _logged_in(two)
        assert (await hub.login(one, "alice")).status_code == 403  # the old password is gone
        assert (await hub.login(one, "alice", "reset-by-admin")).status_code == 302


async def test_who_may_set_whose_password(hub: Hub) -> None:
    alice = await hub.headers_for("alice")
    r = await hub.client.put("/hub/api/users/admin/password", json={"password": "taken-over-pw"}, headers=alice)
    assert r.status_code == 403
    await hub.token_for("bob")
    r = await hub.client.put("/hub/api/users/bob/password", json={"password": "taken-over-pw"}, headers=alice)
    assert r.status_code == 403
    # admin:users without being an admin reaches plain users, never an admin
    helper = await hub.headers_for("helper")
    async with hub.sessions() as s, s.begin():  # before helper's first request: no scopes cached yet
        role = Role(name="user-admin", scopes=["admin:users"])
        s.add(role)
        await s.flush()
        helper_id = (await s.execute(select(User.id).where(User.name == "helper"))).scalar_one()
        s.add(UserRole(user_id=helper_id, role_id=role.id))
    r = await hub.client.put("/hub/api/users/bob/password", json={"password": "set-by-helper"}, headers=helper)
    assert r.status_code == 200
    r = await hub.client.put("/hub/api/users/admin/password", json={"password": "taken-over-pw"}, headers=helper)
    assert r.status_code == 403 and r.json()["message"] == "Only admins may set an admin's password"
    async with hub.new_client() as browser:
        assert (await hub.login(browser, "admin")).status_code == 302  # unchanged


async def test_own_change_needs_the_old_password(hub: Hub) -> None:
    alice = await hub.headers_for("alice")
    url = "/hub/api/users/alice/password"
    r = await hub.client.put(url, json={"password": "alice-second-pw"}, headers=alice)
    assert r.status_code == 403 and "old_password" in r.json()["message"]
    r = await hub.client.put(url, json={"password": "alice-second-pw", "old_password": "wrong-guess"}, headers=alice)
    assert r.status_code == 403 and r.json()["message"] == "old_password is not the current password"
    assert "wrong-guess" not in r.text and "alice-second-pw" not in r.text
    # a token of alice without the `users` scope on herself may not, even with the old password
    narrow = await hub.headers_for("alice", scopes=["read:users:activity!user=alice"])
    r = await hub.client.put(url, json={"password": "alice-second-pw", "old_password": "alice-password"},
                             headers=narrow)
    assert r.status_code == 403
    async with hub.new_client() as other:
        assert (await hub.login(other, "alice")).status_code == 302
        r = await hub.client.put(url, json={"password": "alice-second-pw", "old_password": "alice-password"},
                                 headers=alice)
        assert r.status_code == 200 and r.json()["sessions_ended"] == 1  # a token has no session: all end
        assert not await _logged_in(other)
        assert (await hub.login(other, "alice")).status_code == 403
        assert (await hub.login(other, "alice", "alice-second-pw")).status_code == 302


async def test_own_change_through_the_browser_keeps_its_session(hub: Hub) -> None:
    async with hub.new_client() as mine, hub.new_client() as elsewhere:
        for browser in (mine, elsewhere):
            assert (await hub.login(browser, "alice")).status_code == 302
        r = await mine.put("/hub/api/users/alice/password", headers={"X-XSRFToken": hub.xsrf(mine)},
                           json={"password": "alice-second-pw", "old_password": "alice-password"})
        assert r.status_code == 200 and r.json()["sessions_ended"] == 1
        assert await _logged_in(mine) and not await _logged_in(elsewhere)


async def test_rules_refuse_weak_passwords_with_a_clear_message(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    assert (await hub.client.post("/hub/api/users/longusername", headers=admin)).status_code == 201
    cases = {
        "short": "Password must be at least 8 characters long.",
        "password123": "Password is too common (it is on the list of the most used passwords); choose another.",
        "QWERTY123": "Password is too common (it is on the list of the most used passwords); choose another.",
        "LongUserName": "Password must not be the user name.",
        "x" * 1001: "password: String should have at most 1000 characters",
    }
    for password, message in cases.items():
        r = await hub.client.put("/hub/api/users/longusername/password", json={"password": password}, headers=admin)
        assert r.status_code == 400 and r.json() == {"status": 400, "message": message}, password
        assert password not in r.text
    for body in ({}, {"password": 12345678}, {"password": "good-password-1", "admin": True}):
        r = await hub.client.put("/hub/api/users/longusername/password", json=body, headers=admin)
        assert r.status_code == 400 and r.json()["message"], body


async def test_rules_follow_the_settings(tmp_path: Path, nats_url: str, database_url: str,
                                         nats_namespace: str) -> None:
    rules = {"minimum_password_length": 12, "check_common_password": False}
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"password": rules})
    async with running_hub(settings) as hub:
        admin = await hub.headers_for("admin", admin=True)
        url = "/hub/api/users/alice/password"
        r = await hub.client.put(url, json={"password": "eleven-char"}, headers=admin)
        assert r.status_code == 400 and r.json()["message"] == "Password must be at least 12 characters long."
        assert (await hub.client.put(url, json={"password": "password1234"}, headers=admin)).status_code == 200


async def test_other_authenticators_have_no_passwords(tmp_path: Path, nats_url: str, database_url: str,
                                                      nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"authenticator": "dummy", "dummy_password": "shared-dev-secret"})
    async with running_hub(settings) as hub:
        admin = await hub.headers_for("admin", admin=True)
        r = await hub.client.put("/hub/api/users/alice/password", json={"password": "alice-new-pw"}, headers=admin)
        assert r.status_code == 404 and "dummy" in r.json()["message"]
        assert (await hub.client.get("/hub/change-password")).status_code == 404
