"""`[auth.password] enable_signup`: sign-ups wait for an admin (`/hub/api/signups`), say so only to whoever
knows the password, and are throttled per client address."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fleethub.shared.db.models import Account, User
from fleethub.shared.settings import ServiceSettings
from tests.support.hub import XSRF_FIELD, Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration
WAITING = "waiting for an administrator&#39;s approval"  # as the login page renders it (escaped by Jinja2)


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"password": {"enable_signup": True}})


async def _signup(hub: Hub, username: str, password: str) -> httpx.Response:
    async with hub.new_client() as c:
        page = await c.get("/hub/signup")
        m = XSRF_FIELD.search(page.text)
        assert m, page.text
        return await c.post("/hub/signup", data={"username": username, "password": password, "_xsrf": m.group(1)})


async def _account(hub: Hub, name: str) -> tuple[bool, bool] | None:
    """(user row exists, account approved) — None without a user row; approved None without an account."""
    async with hub.sessions() as s:
        row = (await s.execute(select(User.id).where(User.name == name))).first()
        if row is None:
            return None
        approved = (await s.execute(select(Account.approved).where(Account.user_id == row[0]))).scalar()
        return True, bool(approved) if approved is not None else False


async def test_signup_waits_for_approval_then_logs_in(hub: Hub) -> None:
    assert "/hub/signup" in (await hub.client.get("/hub/login")).text
    r = await _signup(hub, "Newbie", "newbie-secret-pw")
    assert r.status_code == 201 and "waits for an administrator" in r.text and "newbie-secret-pw" not in r.text
    async with hub.new_client() as browser:
        r = await hub.login(browser, "newbie", "newbie-secret-pw")
        assert r.status_code == 403 and WAITING in r.text
        r = await hub.login(browser, "newbie", "a-wrong-password")  # a wrong password learns nothing more
        assert r.status_code == 403 and WAITING not in r.text and "Invalid username or password" in r.text
    admin = await hub.headers_for("admin", admin=True)
    alice = await hub.headers_for("alice")
    assert (await hub.client.get("/hub/api/signups", headers=alice)).status_code == 403
    r = await hub.client.get("/hub/api/signups", headers=admin)
    assert r.status_code == 200 and [p["name"] for p in r.json()] == ["newbie"] and r.json()[0]["created"]
    assert (await hub.client.post("/hub/api/signups/newbie", headers=alice)).status_code == 403
    r = await hub.client.post("/hub/api/signups/newbie", headers=admin)
    assert r.status_code == 200 and r.json() == {"name": "newbie", "approved": True}
    assert (await hub.client.post("/hub/api/signups/newbie", headers=admin)).status_code == 404  # done already
    assert (await hub.client.post("/hub/api/signups/alice", headers=admin)).status_code == 404  # never pending
    assert (await hub.client.get("/hub/api/signups", headers=admin)).json() == []
    async with hub.new_client() as browser:
        r = await hub.login(browser, "newbie", "newbie-secret-pw")
        assert r.status_code == 302 and r.headers["location"] == "/hub/home"


async def test_reject_deletes_the_account_and_a_bare_user(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    for name in ("spammer", "kept"):
        assert (await _signup(hub, name, f"{name}-secret-pw")).status_code == 201
    await hub.token_for("kept")  # something else was made for this user: the row stays, the account goes
    assert (await hub.client.delete("/hub/api/signups/spammer", headers=await hub.headers_for("alice"))).status_code \
        == 403
    assert (await hub.client.delete("/hub/api/signups/spammer", headers=admin)).status_code == 204
    assert (await hub.client.delete("/hub/api/signups/kept", headers=admin)).status_code == 204
    assert await _account(hub, "spammer") is None
    assert (await hub.client.get("/hub/api/users/spammer", headers=admin)).status_code == 404
    assert await _account(hub, "kept") == (True, False)
    assert (await hub.client.delete("/hub/api/signups/kept", headers=admin)).status_code == 404
    async with hub.new_client() as browser:
        assert (await hub.login(browser, "kept", "kept-secret-pw")).status_code == 403
    # the name of a rejected sign-up may sign up again (it is nobody's now)
    assert (await _signup(hub, "spammer", "spammer-other-pw")).status_code == 201


async def test_signup_refuses_existing_users_and_weak_passwords(hub: Hub) -> None:
    await hub.token_for("made-by-api")
    for name in ("alice", "made-by-api", "admin"):
        assert (await _signup(hub, name, "attacker-password")).status_code in (403, 409), name
    for password, message in (("short", "at least 8 characters"), ("iloveyou1", "too common"),
                              ("Weakling", "must not be the user name")):
        r = await _signup(hub, "weakling", password)
        assert r.status_code == 400 and message in r.text, password
    assert await _account(hub, "weakling") is None
    async with hub.new_client() as browser:
        assert (await hub.login(browser, "alice")).status_code == 302  # untouched


async def test_signups_are_throttled_per_client_address(tmp_path: Path, nats_url: str, database_url: str,
                                                         nats_namespace: str) -> None:
    # the second sign-up starts a wait of throttle_base_delay_seconds: long enough never to run out in the test
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"open_signup": True, "throttle_client_free_attempts": 2,
                                  "throttle_base_delay_seconds": 600})
    async with running_hub(settings) as hub:
        assert (await _signup(hub, "first", "first-secret-pw")).status_code == 201
        assert (await _signup(hub, "second", "second-secret-pw")).status_code == 201
        r = await _signup(hub, "third", "third-secret-pw")
        assert r.status_code == 429 and "Too many sign-ups" in r.text and int(r.headers["Retry-After"]) >= 1
        assert await _account(hub, "third") is None
        async with hub.new_client() as browser:  # logins from the address are not held up by its sign-ups
            assert (await hub.login(browser, "first", "first-secret-pw")).status_code == 302
