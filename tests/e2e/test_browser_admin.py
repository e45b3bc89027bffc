"""The admin panel in a real browser (Chromium driven by Playwright), on a whole hub of real processes with a
local spawner running the stand-in user server: an admin starts, opens and stops alice's server; adds users in
batch, makes one admin, renames one, deletes one, searches; edits a group; approves a sign-up. Then: pages
past 50 users and finds one of the second page; removes a member from a group and deletes the group; rejects
a sign-up; a help desk (admin-ui, access:servers for alice only) opens alice's server and no other; under
`auth.manage_groups` a refused membership edit shows the API's message. Screenshot: docs/screenshots/admin.png
(written there when FLEETHUB_SCREENSHOTS is set)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from fleethub.shared.identity import LOGIN_COOKIE
from fleethub.shared.net import free_port
from tests.support.browser import XSRF_FIELD, chromium_page, log_in, submit_login
from tests.support.cluster import FAKE_SERVER, Cluster, running_stack, wait_for

pytestmark = pytest.mark.integration

PASSWORDS = {"admin": "admin-password-1", "alice": "alice-password-1", "hank": "hank-password-1"}
# hank runs the help desk: the admin panel, and only alice's servers to open
HELPDESK = {"name": "helpdesk", "users": ["hank"],
            "scopes": ["admin-ui", "list:users", "read:users", "read:servers", "access:servers!user=alice"]}
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "admin.png"
WAIT = 60_000  # ms: a server start through the spawner worker and the proxy


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS,
        auth={"authenticator": "password", "admin_users": ["admin"], "password": {"enable_signup": True}},
        api={"slow_spawn_timeout": 1, "slow_stop_timeout": 1, "allow_named_servers": True},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
        proxy={"port": free_port()}, roles=[HELPDESK],
    ) as c:
        yield c


@pytest.fixture
async def managed(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    """A hub whose authenticator owns group memberships (`auth.manage_groups`); no spawner."""
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS, start=("auth", "api", "proxy"),
        auth={"authenticator": "password", "admin_users": ["admin"], "manage_groups": True},
        proxy={"port": free_port()},
    ) as c:
        yield c


@asynccontextmanager
async def _admin_api(base: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API holding a token of the admin's, asked for with the admin's password."""
    async with httpx.AsyncClient(base_url=f"{base}/hub/api", timeout=30) as api:
        r = await api.post("/users/admin/tokens",
                           json={"auth": {"username": "admin", "password": PASSWORDS["admin"]}})
        assert r.status_code == 201, r.text
        api.headers["Authorization"] = f"token {r.json()['token']}"
        yield api


async def _sign_up(base: str, name: str, password: str) -> None:
    """Ask for an account at /hub/signup, as a visitor does (it waits for an admin's approval)."""
    async with httpx.AsyncClient(base_url=base) as visitor:
        form = await visitor.get("/hub/signup")
        xsrf = XSRF_FIELD.search(form.text)
        assert xsrf, form.text
        r = await visitor.post("/hub/signup", data={"username": name, "password": password, "_xsrf": xsrf.group(1)})
        assert r.status_code == 201, r.text


async def _state(page: Page, user: str, state: str, server: str = "") -> None:
    badge = page.locator(f'#user-table tr[data-user="{user}"] li[data-server="{server}"] [data-field="state"]')
    await expect(badge).to_have_text(state, timeout=WAIT)


async def _focused_label(page: Page) -> str | None:
    label: str | None = await page.evaluate("document.activeElement.getAttribute('aria-label')")
    return label


@pytest.mark.timeout(240)
async def test_admin_panel_in_chromium(cluster: Cluster, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await cluster.wait_hub()
    await _sign_up(base, "carol", "carol-password-1")
    async with chromium_page() as page:
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.goto(f"{base}/hub/admin")
        assert "/hub/login" in page.url
        await submit_login(page, "admin", PASSWORDS["admin"])
        await page.wait_for_url(re.compile(r".*/hub/admin$"))
        await expect(page.locator('#user-table tr[data-user="alice"]')).to_have_count(1)

        # start alice's server with the keyboard: the row follows its state, focus moves to its Stop button
        await page.get_by_role("button", name="Start alice's default server").focus()
        await page.keyboard.press("Enter")
        await _state(page, "alice", "running")
        assert await _focused_label(page) == "Stop alice's default server"
        opener = page.get_by_role("link", name="Open alice's default server")
        assert await opener.get_attribute("href") == "/user/alice/"  # the admin holds access:servers
        await opener.click()  # the stand-in server answers who it serves
        await page.get_by_text('"user": "alice"').wait_for(timeout=WAIT)
        await page.go_back()
        await page.wait_for_url(re.compile(r".*/hub/admin$"))

        # a named server: started from the row, stopped, deleted after a confirmation
        alice = page.locator('#user-table tr[data-user="alice"]')
        await alice.get_by_text("New named server").click()
        await page.get_by_role("textbox", name="Name of a new server of alice").fill("lab")
        await page.keyboard.press("Enter")
        await _state(page, "alice", "running", "lab")
        lab = alice.get_by_role("link", name="Open alice's server lab")
        assert await lab.get_attribute("href") == "/user/alice/lab/"
        await page.get_by_role("button", name="Stop alice's server lab").click()
        await _state(page, "alice", "stopped", "lab")
        await page.get_by_role("button", name="Delete alice's server lab").click()
        await page.click("#confirm-ok")
        await expect(alice.locator('li[data-server="lab"]')).to_have_count(0)
        await _state(page, "alice", "running")

        # add two users in batch; one of them is made an admin
        await page.fill("#new-usernames", "bob\ndave\n")
        await page.click("#add-users-form button[type=submit]")
        await expect(page.locator("#add-users-msg")).to_have_text("Added 2 users: bob, dave.")
        await expect(page.locator('#user-table tr[data-user="dave"]')).to_have_count(1)
        await page.get_by_role("button", name="Make admin: bob").click()
        await expect(page.locator('#user-table tr[data-user="bob"] [data-field="role"]')).to_have_text("admin")
        await expect(page.get_by_role("button", name="Remove admin: bob")).to_be_visible()

        # a group with a member and properties; refusals show the API's message
        await page.fill("#new-group", "physics")
        await page.click("#new-group-form button[type=submit]")
        group = page.locator('#group-list li[data-group="physics"]')
        await group.locator("summary").click()
        await group.locator('input[name="member"]').fill("nobody-here")
        await group.locator('[data-form="add-member"] button').click()
        await expect(group.locator('[data-field="msg"]')).to_contain_text("nobody-here")
        await expect(group.locator('[data-field="msg"]')).to_have_class(re.compile(r"\berror\b"))
        await group.locator('input[name="member"]').fill("alice")
        await group.locator('[data-form="add-member"] button').click()
        await expect(group.locator('[data-field="members"] li')).to_have_text(["alice Remove"])
        await group.locator('textarea[name="properties"]').fill("[1, 2]")
        await group.locator('[data-form="properties"] button').click()
        await expect(group.locator('[data-field="msg"]')).to_have_text(re.compile("must be a JSON object"))
        await group.locator('textarea[name="properties"]').fill('{"course": "PHY101"}')
        await group.locator('[data-form="properties"] button').click()
        await expect(group.locator('[data-field="msg"]')).to_have_text("Properties of physics saved.")

        await expect(page.locator('#signup-table tr[data-user="carol"]')).to_have_count(1)
        await page.evaluate("window.scrollTo(0, 0)")
        await page.screenshot(path=str(tmp_path / "admin.png"))

        # rename dave to a name that is markup: shown as text, never parsed
        await page.get_by_role("button", name="Rename dave").click()
        await page.fill("#rename-input", '<b>dave"')
        await page.keyboard.press("Enter")
        await expect(page.locator("#users-msg")).to_have_text('dave is now called <b>dave".')
        renamed = page.locator('#user-table tr[data-user="<b>dave\\""]')
        await expect(renamed.locator('[data-field="name"]')).to_have_text('<b>dave"')
        assert await page.locator("#user-table b, #users-msg b").count() == 0

        # delete bob: nothing happens until the confirmation
        await page.get_by_role("button", name="Delete user bob").click()
        await page.locator("#confirm-dialog").get_by_role("button", name="Cancel").click()
        await expect(page.locator('#user-table tr[data-user="bob"]')).to_have_count(1)
        await page.get_by_role("button", name="Delete user bob").click()
        await expect(page.locator("#confirm-text")).to_have_text(re.compile("Delete user bob"))
        await page.click("#confirm-ok")
        await expect(page.locator("#users-msg")).to_have_text("User bob deleted.")
        await expect(page.locator('#user-table tr[data-user="bob"]')).to_have_count(0)

        # search by name
        await page.fill("#user-filter", "DAV")
        await page.keyboard.press("Enter")
        await expect(page.locator("#user-table tbody tr")).to_have_count(1)
        await expect(page.locator("#user-table tbody th")).to_have_text('<b>dave"')
        await page.fill("#user-filter", "zzz")
        await expect(page.locator("#user-table tbody")).to_have_text(re.compile("No user's name contains"))
        await page.fill("#user-filter", "")
        await expect(page.locator('#user-table tr[data-user="alice"]')).to_have_count(1)

        # approve carol's sign-up: her password logs in from now on
        await page.get_by_role("button", name="Approve carol").click()
        await expect(page.locator("#signups-msg")).to_have_text("carol may log in now.")
        await expect(page.locator("#signup-table tbody")).to_have_text("No sign-up is waiting.")
        async with httpx.AsyncClient(base_url=base) as carol:
            await log_in(carol, "carol", "carol-password-1")

        # stop alice's server from the panel
        await page.get_by_role("button", name="Stop alice's default server").click()
        await _state(page, "alice", "stopped")
        await expect(page.get_by_role("button", name="Start alice's default server")).to_be_visible()
        await expect(opener).to_have_count(0)
    if os.environ.get("FLEETHUB_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "admin.png", SCREENSHOT)


async def _running(api: httpx.AsyncClient, user: str) -> None:
    async def ready() -> bool:
        server = (await api.get(f"/users/{user}")).json()["servers"].get("", {})
        return bool(server.get("ready"))

    r = await api.post(f"/users/{user}/server")
    assert r.status_code in (201, 202), r.text
    await wait_for(ready, timeout=WAIT / 1000, interval=0.2, what=f"{user}'s server ready")


@pytest.mark.timeout(240)
async def test_admin_pages_groups_and_rejects_in_chromium(cluster: Cluster) -> None:
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await cluster.wait_hub()
    await _sign_up(base, "erin", "erin-password-1")
    async with _admin_api(base) as api, chromium_page() as page:
        many = [f"user-{n:02d}" for n in range(55)]  # with admin, alice, hank and erin: two pages of 50
        assert (await api.post("/users", json={"usernames": many})).status_code == 201
        assert (await api.post("/groups/chem", json={"users": ["alice", "user-01"]})).status_code == 201
        await _running(api, "alice")
        await _running(api, "user-01")
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.goto(f"{base}/hub/admin")
        await submit_login(page, "admin", PASSWORDS["admin"])
        await page.wait_for_url(re.compile(r".*/hub/admin$"))

        # paging: the last users are on the second page only; a search finds one of them from the first
        last = page.locator('#user-table tr[data-user="user-54"]')
        await expect(page.locator("#users-range")).to_have_text("Users 1–50 of 59")
        await expect(page.locator("#user-table tbody tr")).to_have_count(50)
        await expect(last).to_have_count(0)
        await page.get_by_role("button", name="Next").first.click()
        await expect(page.locator("#users-range")).to_have_text("Users 51–59 of 59")
        await expect(last).to_have_count(1)
        await expect(page.locator('#user-table tr[data-user="alice"]')).to_have_count(0)
        await page.get_by_role("button", name="Previous").first.click()
        await expect(page.locator('#user-table tr[data-user="alice"]')).to_have_count(1)
        await expect(last).to_have_count(0)
        await page.fill("#user-filter", "user-54")
        await page.keyboard.press("Enter")
        await expect(page.locator("#user-table tbody tr")).to_have_count(1)
        await expect(last).to_have_count(1)
        await page.fill("#user-filter", "")
        await expect(page.locator('#user-table tr[data-user="alice"]')).to_have_count(1)

        # a member removed from a group, then the group deleted: the hub's groups change
        group = page.locator('#group-list li[data-group="chem"]')
        await group.locator("summary").click()
        await page.get_by_role("button", name="Remove alice from chem").click()
        await expect(group.locator('[data-field="msg"]')).to_have_text("alice removed from chem.")
        await expect(group.locator('[data-field="members"] li')).to_have_text(["user-01 Remove"])
        assert (await api.get("/groups/chem")).json()["users"] == ["user-01"]
        await page.get_by_role("button", name="Delete group chem").click()
        await expect(page.locator("#confirm-text")).to_have_text(re.compile("Delete group chem"))
        await page.click("#confirm-ok")
        await expect(page.locator("#groups-msg")).to_have_text("Group chem deleted.")
        await expect(group).to_have_count(0)
        assert (await api.get("/groups/chem")).status_code == 404

        # erin's sign-up rejected: her account is gone, her password logs in nowhere
        await page.get_by_role("button", name="Reject erin").click()
        await expect(page.locator("#confirm-text")).to_have_text(re.compile("Reject the sign-up of erin"))
        await page.click("#confirm-ok")
        await expect(page.locator("#signups-msg")).to_have_text("The sign-up of erin was rejected.")
        await expect(page.locator("#signup-table tbody")).to_have_text("No sign-up is waiting.")
        assert (await api.get("/users/erin")).status_code == 404
        assert [s["name"] for s in (await api.get("/signups")).json()] == []
        async with httpx.AsyncClient(base_url=base) as erin:
            form = await erin.get("/hub/login")
            xsrf = XSRF_FIELD.search(form.text)
            assert xsrf, form.text
            r = await erin.post("/hub/login", data={"username": "erin", "password": "erin-password-1",
                                                    "_xsrf": xsrf.group(1)})
            assert r.status_code != 302 and LOGIN_COOKIE not in r.cookies, r.status_code

    # the help desk (admin-ui, and access:servers only for alice): it opens alice's server, not user-01's
    async with chromium_page() as page:
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.goto(f"{base}/hub/admin")
        await submit_login(page, "hank", PASSWORDS["hank"])
        await page.wait_for_url(re.compile(r".*/hub/admin$"))
        await page.fill("#user-filter", "user-01")
        await page.keyboard.press("Enter")
        await _state(page, "user-01", "running")
        await expect(page.get_by_role("link", name="Open user-01's default server")).to_have_count(0)
        await page.fill("#user-filter", "alice")
        await page.keyboard.press("Enter")
        await _state(page, "alice", "running")
        opener = page.get_by_role("link", name="Open alice's default server")
        assert await opener.get_attribute("href") == "/user/alice/"
        await opener.click()
        await page.get_by_text('"user": "alice"').wait_for(timeout=WAIT)


async def test_a_refused_membership_edit_is_shown_under_manage_groups(managed: Cluster) -> None:
    base = f"http://127.0.0.1:{managed.settings.proxy.port}"
    await managed.wait_hub()
    async with _admin_api(base) as api, chromium_page() as page:
        assert (await api.post("/groups/bio", json={})).status_code == 201  # a group without members may be made
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.goto(f"{base}/hub/admin")
        await submit_login(page, "admin", PASSWORDS["admin"])
        await page.wait_for_url(re.compile(r".*/hub/admin$"))
        await expect(page.get_by_text("Group memberships come from the authenticator")).to_be_visible()
        group = page.locator('#group-list li[data-group="bio"]')
        await group.locator("summary").click()
        await group.locator('input[name="member"]').fill("alice")
        await group.locator('[data-form="add-member"] button').click()
        msg = group.locator('[data-field="msg"]')
        await expect(msg).to_have_text(re.compile(r"managed by the authenticator \(auth\.manage_groups\)"))
        await expect(msg).to_be_visible()
        await expect(msg).to_have_class(re.compile(r"\berror\b"))
        await expect(group.locator('[data-field="members"] li')).to_have_count(0)
        assert (await api.get("/groups/bio")).json()["users"] == []
