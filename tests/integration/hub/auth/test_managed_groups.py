"""`auth.manage_groups`: the groups a login brings (a third-party authenticator of tests/support, and the
post-auth hook) are created and become the user's memberships, announced as GroupChanged; the API then
refuses to change memberships. And `auth.post_auth_hook` through the real login form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fleethub.shared.db.models import User
from fleethub.shared.events import GroupChanged
from tests.support.hub import Hub, hub_settings, running_hub
from tests.support.third_party_auth import LOGINS, script

pytestmark = pytest.mark.integration

AUTHENTICATOR = "tests.support.third_party_auth:ScriptedAuthenticator"
HOOK = "tests.support.third_party_auth:tag_or_refuse"
MANAGED = "Group membership is managed by the authenticator (auth.manage_groups)"


async def _members(hub: Hub, group: str) -> list[str] | None:
    r = await hub.client.get(f"/hub/api/groups/{group}", headers=await hub.headers_for("admin", admin=True))
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    users: list[str] = r.json()["users"]
    return sorted(users)


async def _log_in(hub: Hub, name: str, password: str) -> int:
    async with hub.new_client() as c:
        return (await hub.login(c, name, password)).status_code


def _changes(events: list[Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(e.name, e.change, tuple(e.users)) for e in events if isinstance(e, GroupChanged)}


async def test_a_login_with_groups_creates_and_syncs_memberships(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"authenticator": AUTHENTICATOR, "manage_groups": True})
    async with running_hub(settings) as hub:
        script(tmp_path, LOGINS, ada={"groups": ["physics", "ops"]}, ben={"groups": ["physics"]})
        assert await _log_in(hub, "ada", "ada-password") == 302
        assert await _log_in(hub, "ben", "ben-password") == 302
        assert await _members(hub, "physics") == ["ada", "ben"] and await _members(hub, "ops") == ["ada"]

        script(tmp_path, LOGINS, ada={"groups": ["physics", "bad/name"]})  # left ops; an invalid name skipped
        assert await _log_in(hub, "ada", "ada-password") == 302
        assert await _members(hub, "ops") == [] and await _members(hub, "physics") == ["ada", "ben"]
        assert await _members(hub, "bad%2Fname") is None

        changes = _changes(await hub.events(40, timeout=1.0))
        assert {("physics", "created", ()), ("ops", "created", ()), ("physics", "members", ("ada",)),
                ("physics", "members", ("ben",)), ("ops", "members", ("ada",))} <= changes
        assert [c for c in changes if c[0] == "ops" and c[1] == "members"] == [("ops", "members", ("ada",))], \
            "one event for the join and one for the leave, the same shape"

        # the API may not change what the authenticator manages
        admin = await hub.headers_for("admin", admin=True)
        for method in ("POST", "DELETE"):
            r = await hub.client.request(method, "/hub/api/groups/physics/users", json={"users": ["ben"]},
                                         headers=admin)
            assert r.status_code == 400 and r.json() == {"status": 400, "message": MANAGED}, r.text
        r = await hub.client.post("/hub/api/groups/chem", json={"users": ["ada"]}, headers=admin)
        assert r.status_code == 400 and r.json()["message"] == MANAGED
        r = await hub.client.post("/hub/api/groups", json={"groups": ["chem"], "users": ["ada"]}, headers=admin)
        assert r.status_code == 400 and r.json()["message"] == MANAGED
        assert (await hub.client.post("/hub/api/groups/chem", headers=admin)).status_code == 201  # empty: fine
        assert await _members(hub, "physics") == ["ada", "ben"]


async def test_without_manage_groups_a_login_leaves_memberships_alone(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"authenticator": AUTHENTICATOR})
    async with running_hub(settings) as hub:
        script(tmp_path, LOGINS, ada={"groups": ["physics"]})
        assert await _log_in(hub, "ada", "ada-password") == 302
        assert await _members(hub, "physics") is None
        admin = await hub.headers_for("admin", admin=True)
        assert (await hub.client.post("/hub/api/groups/physics", json={"users": ["ada"]},
                                      headers=admin)).status_code == 201
        assert (await hub.client.request("DELETE", "/hub/api/groups/physics/users", json={"users": ["ada"]},
                                         headers=admin)).status_code == 200


async def test_post_auth_hook_adds_a_group_and_refuses_a_user_at_the_login_form(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    # the built-in password authenticator (accounts of tests/support/hub.py), the hook named by import path
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"manage_groups": True, "post_auth_hook": HOOK})
    async with running_hub(settings) as hub:
        assert await _log_in(hub, "alice", "alice-password") == 302
        assert await _members(hub, "hooked") == ["alice"]
        assert await _log_in(hub, "alice", "wrong-password") == 403, "the hook never turns a refusal into a login"

    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"authenticator": AUTHENTICATOR, "post_auth_hook": HOOK})
    async with running_hub(settings) as hub:
        async with hub.new_client() as c:
            r = await hub.login(c, "refused-rita", "refused-rita-password")
            assert r.status_code == 403 and "Invalid username or password" in r.text
            assert "jupyterhub-hub-login" not in r.cookies
        async with hub.sessions() as s:
            assert (await s.execute(select(User.id).where(User.name == "refused-rita"))).first() is None
        assert await _log_in(hub, "rob", "rob-password") == 302
