"""`/hub/change-password` end to end (session-bound XSRF, old password, other sessions ended) and the first
admins' accounts from `auth.initial_admin_password_file` (made once, never overwritten)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from fleethub.shared.errors import ConfigError
from tests.support.hub import XSRF_FIELD, Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration
PAGE = "/hub/change-password"


async def _form_token(browser: httpx.AsyncClient) -> str:
    page = await browser.get(PAGE)
    assert page.status_code == 200 and "Change password" in page.text
    m = XSRF_FIELD.search(page.text)
    assert m, page.text
    return m.group(1)


async def _change(browser: httpx.AsyncClient, old: str, new: str, again: str | None = None, *,
                  xsrf: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    data = {"old_password": old, "password": new, "password_again": new if again is None else again}
    if xsrf is not None:
        data["_xsrf"] = xsrf
    return await browser.post(PAGE, data=data, headers=headers)


async def test_change_password_page_end_to_end(hub: Hub) -> None:
    async with hub.new_client() as browser, hub.new_client() as elsewhere:
        r = await browser.get(PAGE)
        assert r.status_code == 302 and r.headers["location"] == "/hub/login?next=/hub/change-password"
        for c in (browser, elsewhere):
            assert (await hub.login(c, "alice")).status_code == 302
        assert 'href="/hub/change-password"' in (await browser.get("/hub/home")).text
        token = await _form_token(browser)
        assert token == hub.xsrf(browser)  # the session's own _xsrf cookie
        r = await _change(browser, "alice-password", "alice-new-pw-1", "alice-new-pw-2", xsrf=token)
        assert r.status_code == 400 and "do not match" in r.text
        r = await _change(browser, "not-her-password", "alice-new-pw-1", xsrf=token)
        assert r.status_code == 403 and "current password is not right" in r.text
        r = await _change(browser, "alice-password", "qwerty123", xsrf=token)
        assert r.status_code == 400 and "too common" in r.text
        r = await _change(browser, "alice-password", "alice-new-pw-1", xsrf=token)
        assert r.status_code == 200 and "Password changed" in r.text
        for secret in ("alice-password", "alice-new-pw-1"):
            assert secret not in r.text
        assert (await browser.get(PAGE)).status_code == 200  # this session goes on
        assert (await elsewhere.get(PAGE)).status_code == 302  # the other one ended
    async with hub.new_client() as c:
        assert (await hub.login(c, "alice")).status_code == 403
        assert (await hub.login(c, "alice", "alice-new-pw-1")).status_code == 302


async def test_change_password_refuses_a_post_without_the_session_xsrf(hub: Hub) -> None:
    async with hub.new_client() as browser, hub.new_client() as attacker:
        assert (await hub.login(browser, "alice")).status_code == 302
        assert (await _change(browser, "alice-password", "alice-new-pw-1")).status_code == 403  # no token
        r = await _change(browser, "alice-password", "alice-new-pw-1", xsrf="forged.token")
        assert r.status_code == 403 and "expired" in r.text
        # a token of another session (bob's) does not pass for alice's
        await hub.token_for("bob")
        async with hub.new_client() as bob:
            admin = await hub.headers_for("admin", admin=True)
            await hub.client.put("/hub/api/users/bob/password", json={"password": "bob-secret-pw"}, headers=admin)
            assert (await hub.login(bob, "bob", "bob-secret-pw")).status_code == 302
            r = await _change(browser, "alice-password", "alice-new-pw-1", xsrf=hub.xsrf(bob))
            assert r.status_code == 403
        # the right token from a foreign page
        token = await _form_token(browser)
        r = await _change(browser, "alice-password", "alice-new-pw-1", xsrf=token,
                          headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        r = await attacker.post(PAGE, data={"old_password": "x", "password": "alice-new-pw-1",
                                            "password_again": "alice-new-pw-1", "_xsrf": token})
        assert r.status_code == 303 and r.headers["location"].startswith("/hub/login")  # not logged in at all
    async with hub.new_client() as c:
        assert (await hub.login(c, "alice")).status_code == 302  # unchanged throughout


def _password_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "admin-password"
    path.write_text(text)
    os.chmod(path, mode)
    return path


async def test_initial_password_file_creates_admin_accounts_once(tmp_path: Path, nats_url: str, database_url: str,
                                                                 nats_namespace: str) -> None:
    path = _password_file(tmp_path, "first-root-secret\n")
    auth = {"admin_users": ["admin", "root"], "initial_admin_password_file": str(path)}
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth=auth)
    async with running_hub(settings) as hub:  # admin has an account already (admin-password): left alone
        async with hub.new_client() as c:
            assert (await hub.login(c, "root", "first-root-secret")).status_code == 302
        async with hub.new_client() as c:
            assert (await hub.login(c, "admin", "first-root-secret")).status_code == 403
            assert (await hub.login(c, "admin")).status_code == 302
        me = await hub.client.get("/hub/api/users/root", headers=await hub.headers_for("admin", admin=True))
        assert me.json()["admin"] is True
    path = _password_file(tmp_path, "second-root-secret\n")
    async with running_hub(settings) as hub:  # a restart with another password overwrites nothing
        async with hub.new_client() as c:
            assert (await hub.login(c, "root", "second-root-secret")).status_code == 403
            assert (await hub.login(c, "root", "first-root-secret")).status_code == 302


@pytest.mark.parametrize(("text", "mode", "error"), [
    ("open-secret-pw\n", 0o644, "has mode 0644"),
    ("\n", 0o600, "is empty"),
    ("SuperRoot\n", 0o600, "must not be the user name"),
    ("password1\n", 0o600, "too common"),
])
async def test_initial_password_file_refuses_to_start_on_a_bad_file(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, text: str, mode: int,
        error: str) -> None:
    path = _password_file(tmp_path, text, mode)
    auth = {"admin_users": ["admin", "superroot"], "initial_admin_password_file": str(path)}
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth=auth)
    with pytest.raises(ConfigError) as caught:
        async with running_hub(settings):
            pass
    assert "auth.initial_admin_password_file" in caught.value.message and error in caught.value.message
    assert "open-secret-pw" not in caught.value.message
