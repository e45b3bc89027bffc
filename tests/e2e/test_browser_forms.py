"""The last pages with a Chromium test of their own (Playwright): the sign-up form (rules' errors, a taken
name, an admin's approval in the admin panel, then the login), the change-password form (a wrong current
password, a forged form, then the new password at the next login), the OAuth consent page of a third-party
service (its scopes in words; "Cancel" issues nothing, "Authorize" a code that buys a token), and the share
invitation page (bob accepts alice's invitation and then uses her real jupyterhub-singleuser through the
proxy; a bad, a revoked and an expired code get the error page) with the spawn-pending page at a phone's
width before it.
Screenshots (1280×800): docs/screenshots/signup.png, change-password.png, consent.png, accept-share.png,
written there when FLEETHUB_SCREENSHOTS is set."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Page, ViewportSize, expect
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from fleethub.shared.db.models import OAuthCode, ShareCode
from fleethub.shared.net import free_port
from tests.support.browser import PHONE, chromium_page, fits_the_width, submit_login
from tests.support.cluster import Cluster, running_stack
from tests.support.spawn_form import spawn_through_form

pytestmark = pytest.mark.integration

PASSWORDS = {"admin": "admin-password-1", "alice": "alice-password-1", "bob": "bob-password-12"}
SIZE: ViewportSize = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SINGLEUSER = shutil.which("jupyterhub-singleuser", path=str(Path(sys.executable).parent))
GALLERY_TOKEN = "gallery-service-token-0123456789abcdef"
GALLERY_SCOPE = "custom:gallery:read"
# as root, jupyterhub-singleuser needs --allow-root (fleethub adds it only when it runs the command itself)
LATE_START = f'sleep 3; exec "{SINGLEUSER}" --allow-root "$@"'
WAIT = 90_000  # ms: a start of jupyterhub-singleuser through the spawner worker and the proxy


async def _stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
                 **sections: Any) -> AsyncIterator[Cluster]:
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS,
                             proxy={"port": free_port()}, **sections) as c:
        await c.wait_hub()
        yield c


@pytest.fixture
async def signups(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    """Password accounts, sign-ups waiting for an admin's approval; no spawner."""
    async for c in _stack(tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
                          auth={"authenticator": "password", "admin_users": ["admin"],
                                "password": {"enable_signup": True}}):
        yield c


@pytest.fixture
async def gallery(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    """A hub service with an OAuth client that asks for more than the defaults, not pre-authorized."""
    service = {"name": "gallery", "url": f"http://127.0.0.1:{free_port()}", "api_token": GALLERY_TOKEN,
               "oauth_client_allowed_scopes": ["read:users:activity!user", GALLERY_SCOPE, "list:groups"]}
    # alice may use the service, and holds its custom scope (a token never holds more than its owner)
    role = {"name": "gallery-users", "scopes": ["access:services!service=gallery", GALLERY_SCOPE], "users": ["alice"]}
    async for c in _stack(tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
                          auth={"authenticator": "password"}, services=[service], roles=[role],
                          custom_scopes={GALLERY_SCOPE: {"description": "See the pictures in your gallery"}}):
        yield c


@pytest.fixture
async def notebooks(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    """Users' servers are real jupyterhub-singleuser processes (they check who may use them with the hub), each
    started 3 s late so that a start stays pending for a while."""
    assert SINGLEUSER, "jupyterhub-singleuser is not installed next to this Python"
    (tmp_path / "alice").mkdir()
    # sharing is granted, as in JupyterHub: alice may share her own servers
    sharer = {"name": "sharer", "scopes": ["shares!user", "read:users:name"], "users": ["alice"]}
    async for c in _stack(tmp_path, nats_url, database_url, nats_namespace, auth={"authenticator": "password"},
                          api={"slow_spawn_timeout": 1}, roles=[sharer],
                          spawner={"cmd": ["/bin/sh", "-c", LATE_START, "singleuser"], "default_url": "/lab",
                                   "notebook_dir": str(tmp_path / "{username}")}):
        yield c


def _base(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.settings.proxy.port}"


async def _screenshot(page: Page, name: str, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("FLEETHUB_SCREENSHOTS") else tmp_path
    await page.screenshot(path=str(folder / name))
    assert (folder / name).stat().st_size > 1000


async def _fits_a_phone(page: Page) -> None:
    """At 375×740 the page needs no sideways scroll; then back to the desktop size."""
    await page.set_viewport_size(PHONE)
    await fits_the_width(page)
    await page.set_viewport_size(SIZE)


async def _token_with_password(base: str, user: str, password: str) -> httpx.Response:
    """Ask for an API token with `user`'s password (JupyterHub's way for scripts): 201 when it is right."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return await client.post(f"/hub/api/users/{user}/tokens",
                                 json={"auth": {"username": user, "password": password}})


async def _api(base: str, user: str) -> httpx.AsyncClient:
    r = await _token_with_password(base, user, PASSWORDS[user])
    assert r.status_code == 201, r.text
    return httpx.AsyncClient(base_url=f"{base}/hub/api", timeout=30,
                             headers={"Authorization": f"token {r.json()['token']}"})


async def test_sign_up_approval_login_and_change_password(signups: Cluster, tmp_path: Path) -> None:
    base = _base(signups)
    admin = await _api(base, "admin")
    async with admin, chromium_page() as page:
        await page.set_viewport_size(SIZE)
        # a visitor finds the sign-up page from the login form
        await page.goto(f"{base}/hub/login")
        await page.get_by_role("link", name=re.compile("sign up|create an account", re.I)).click()
        await page.wait_for_url(f"{base}/hub/signup")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Create an account")
        await page.fill("#username", "dora")
        await page.fill("#password", "dora-first-password")
        await _screenshot(page, "signup.png", tmp_path)
        await _fits_a_phone(page)
        await page.fill("#password", "password")  # on the list of the most used ones
        await page.get_by_role("button", name="Create account").click()
        await expect(page.get_by_role("alert")).to_contain_text("Password is too common")
        assert await page.input_value("#username") == "dora" and await page.input_value("#password") == ""
        await page.fill("#password", "dor")  # too short
        await page.get_by_role("button", name="Create account").click()
        await expect(page.get_by_role("alert")).to_contain_text("at least")
        assert (await admin.get("/signups")).json() == []  # nothing was made of the refused ones
        assert (await admin.get("/users/dora")).status_code == 404
        await page.fill("#password", "dora-first-password")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Account requested")
        await expect(page.locator("main")).to_contain_text("dora")
        assert [s["name"] for s in (await admin.get("/signups")).json()] == ["dora"]

        # the same name again: refused, with the message shown, and the first account untouched
        await page.goto(f"{base}/hub/signup")
        await page.fill("#username", "dora")
        await page.fill("#password", "another-dora-password")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.get_by_role("alert")).to_have_text("User dora already exists")
        assert [s["name"] for s in (await admin.get("/signups")).json()] == ["dora"]

        # not approved yet: the password does not open the hub
        await page.goto(f"{base}/hub/login")
        await submit_login(page, "dora", "dora-first-password")
        await expect(page.get_by_role("alert")).to_be_visible()
        assert "/hub/login" in page.url
        assert (await _token_with_password(base, "dora", "dora-first-password")).status_code == 403

        # the admin approves the sign-up in the admin panel
        await page.context.clear_cookies()
        await page.goto(f"{base}/hub/login?next=/hub/admin")
        await submit_login(page, "admin", PASSWORDS["admin"])
        await page.wait_for_url(f"{base}/hub/admin")
        await page.get_by_role("button", name="Approve dora").click()
        await expect(page.locator("#signups-msg")).to_have_text("dora may log in now.")
        assert (await admin.get("/signups")).json() == []

        # dora logs in
        await page.context.clear_cookies()
        await page.goto(f"{base}/hub/login")
        await submit_login(page, "dora", "dora-first-password")
        await page.wait_for_url(f"{base}/hub/home")

        # change password: the wrong current password is refused, with the message
        await page.goto(f"{base}/hub/change-password")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Change password")
        await _screenshot(page, "change-password.png", tmp_path)
        await _fits_a_phone(page)
        await page.fill("#old_password", "not-my-password")
        await page.fill("#password", "dora-second-password")
        await page.fill("#password_again", "dora-second-password")
        await page.get_by_role("button", name="Change password").click()
        await expect(page.get_by_role("alert")).to_have_text("The current password is not right.")
        # a form without the right XSRF token (as a forged one would be) changes nothing
        await page.fill("#old_password", "dora-first-password")
        await page.fill("#password", "dora-second-password")
        await page.fill("#password_again", "dora-second-password")
        await page.locator("input[name=_xsrf]").evaluate("field => { field.value = 'forged'; }")
        await page.get_by_role("button", name="Change password").click()
        await expect(page.get_by_role("alert")).to_contain_text("the form was not sent from this site")
        assert (await _token_with_password(base, "dora", "dora-first-password")).status_code == 201
        await page.fill("#old_password", "dora-first-password")
        await page.fill("#password", "dora-second-password")
        await page.fill("#password_again", "dora-second-password")
        await page.get_by_role("button", name="Change password").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Password changed")
        assert (await _token_with_password(base, "dora", "dora-first-password")).status_code == 403
        # the next login takes the new password only
        await page.get_by_role("navigation", name="Hub").get_by_role("link", name="Sign out").click()
        await page.wait_for_url(re.compile(r".*/hub/login.*"))
        await submit_login(page, "dora", "dora-first-password")
        await expect(page.get_by_role("alert")).to_contain_text("Invalid username or password")
        await page.fill("#password", "dora-second-password")
        await page.click("input[type=submit]")
        await page.wait_for_url(f"{base}/hub/home")
        await expect(page.get_by_label("Signed in as")).to_have_text("dora")


async def _codes(database_url: str) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(OAuthCode)
                                           .where(OAuthCode.client_id == "service-gallery"))).scalar_one())
    finally:
        await engine.dispose()


async def test_the_consent_page_of_a_third_party_service(gallery: Cluster, database_url: str,
                                                         tmp_path: Path) -> None:
    base = _base(gallery)
    authorize = (f"{base}/hub/api/oauth2/authorize?client_id=service-gallery&response_type=code&state=st-1"
                 f"&redirect_uri=/services/gallery/oauth_callback&scope=read:users:activity!user+{GALLERY_SCOPE}+list:groups")
    async with chromium_page() as page:
        await page.set_viewport_size(SIZE)
        await page.goto(authorize)
        async with page.expect_response(lambda r: r.url.startswith(f"{base}/hub/api/oauth2/authorize?")) as shown:
            await submit_login(page, "alice", PASSWORDS["alice"])
        await expect(page.get_by_role("heading", level=1)).to_have_text("Authorize access")
        # a page, though under /hub/api: its stylesheet applies, and no other site may frame it (clickjacking)
        headers = await (await shown.value).all_headers()
        assert headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in headers["content-security-policy"]
        assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
        await expect(page.locator("main")).to_contain_text("the service gallery asks to know who you are")
        listed = [text.strip() for text in await page.locator("#oauth-scopes li").all_inner_texts()]
        assert listed == [
            "Use services (only the service gallery) access:services!service=gallery",
            "Know user names (only the user alice) read:users:name!user=alice",
            "Know which groups users are in (only the user alice) read:users:groups!user=alice",
            "Read when users were last active (only yours) read:users:activity!user",
            f"See the pictures in your gallery {GALLERY_SCOPE}",
        ], listed  # not list:groups: alice does not hold it, so no token of hers may
        await _screenshot(page, "consent.png", tmp_path)
        await _fits_a_phone(page)

        # Cancel: back home, and no code was issued
        await page.get_by_role("link", name="Cancel").click()
        await page.wait_for_url(f"{base}/hub/home")
        assert await _codes(database_url) == 0

        # Authorize: the service's callback gets a code (and its state) that buys a token with those scopes
        await page.goto(authorize)
        await page.get_by_role("button", name="Authorize").click()
        # (the service is not running: what its callback would read is in the address)
        await page.wait_for_url(re.compile(re.escape(f"{base}/services/gallery/oauth_callback?") + ".*code="))
        assert await _codes(database_url) == 1
        query = parse_qs(urlsplit(page.url).query)
        assert query["state"] == ["st-1"]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post("/hub/api/oauth2/token", data={
            "grant_type": "authorization_code", "code": query["code"][0], "client_id": "service-gallery",
            "client_secret": GALLERY_TOKEN, "redirect_uri": "/services/gallery/oauth_callback"})
        assert r.status_code == 200, r.text
        me = await client.get("/hub/api/user", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert me.status_code == 200 and me.json()["name"] == "alice", me.text
        held = set(me.json()["scopes"])
        assert {"read:users:activity!user=alice", GALLERY_SCOPE} <= held and "list:groups" not in held, held
    assert await _codes(database_url) == 0  # the code was used up


async def _expire_share_codes(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(ShareCode).values(expires_at=func.now() - timedelta(minutes=1)))
    finally:
        await engine.dispose()


async def test_spawn_pending_on_a_phone_then_a_share_accepted(notebooks: Cluster, database_url: str,
                                                              tmp_path: Path) -> None:
    base = _base(notebooks)
    alice = await _api(base, "alice")
    async with alice:
        await _start_on_a_phone_then_share(base, alice, database_url, tmp_path)


async def _start_on_a_phone_then_share(base: str, alice: httpx.AsyncClient, database_url: str,
                                       tmp_path: Path) -> None:
    async with chromium_page() as page:
        # alice starts her server at a phone's width: the pending page's bar fits, no sideways scroll
        await page.set_viewport_size(PHONE)
        await page.goto(f"{base}/hub/login")
        await submit_login(page, "alice", PASSWORDS["alice"])
        await page.wait_for_url(f"{base}/hub/home")
        await spawn_through_form(page, base_url=base)
        await page.wait_for_url(re.compile(r".*/hub/spawn-pending/alice$"))
        bar = page.locator("#spawn-progress")
        await expect(bar).to_be_visible()
        await expect(page.locator("#progress-log li").first).to_be_visible()
        box = await bar.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
        await fits_the_width(page)
        assert (await alice.get("/users/alice")).json()["servers"][""]["ready"] is False  # it is still starting
        await page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=WAIT)
        assert (await alice.get("/users/alice")).json()["servers"][""]["ready"] is True

        # alice invites bob through the API
        r = await alice.post("/share-codes/alice/", json={})
        assert r.status_code == 200, r.text
        accept, code = r.json()["accept_url"], r.json()["code"]

    async with chromium_page() as page:
        await page.set_viewport_size(SIZE)
        await page.goto(f"{base}/hub/login")
        await submit_login(page, "bob", PASSWORDS["bob"])
        await page.wait_for_url(f"{base}/hub/home")
        # before accepting, alice's server is not bob's to use
        await page.goto(f"{base}/user/alice/lab")
        await expect(page.locator("main")).to_contain_text("You do not have access to the server alice/")
        # a bad code: a clear error page
        r = await page.goto(f"{base}/hub/accept-share?code=sc_1234_not-a-code")
        assert r is not None and r.status == 404
        await expect(page.locator("main")).to_contain_text("Share not found or expired")
        await expect(page.get_by_role("heading", level=1)).to_contain_text("404")
        # the invitation: what it grants, and an accept button
        await page.goto(f"{base}{accept}")
        await expect(page.get_by_role("heading", level=1)).to_have_text("Accept sharing invitation")
        await expect(page.locator("main")).to_contain_text("You (bob) have been invited to access alice's server")
        await expect(page.locator("main li code").first).to_have_text("access:servers!server=alice/")
        await _screenshot(page, "accept-share.png", tmp_path)
        await _fits_a_phone(page)
        await page.get_by_role("button", name="Accept invitation").click()
        # alice's server sends bob through the hub's OAuth: he is asked before it may know him (not his own)
        await expect(page.get_by_role("heading", level=1)).to_have_text("Authorize access", timeout=WAIT)
        await expect(page.locator("main")).to_contain_text("the server alice/ asks to know who you are")
        await expect(page.locator("#oauth-scopes")).to_contain_text("access:servers!server=alice/")
        await page.get_by_role("button", name="Authorize").click()
        await page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=WAIT)
        # alice's server now answers bob (its API, through the proxy, with bob's cookie from the OAuth flow)
        r = await page.request.get(f"{base}/user/alice/api/contents")
        assert r.status == 200, await r.text()
        shared = (await alice.get("/shares/alice/")).json()
        assert [item["user"]["name"] for item in shared["items"]] == ["bob"], shared
        codes = (await alice.get("/share-codes/alice/")).json()["items"]
        assert [c["exchange_count"] for c in codes] == [1], codes
        # a code alice revoked: the same link now shows the error page
        assert (await alice.delete("/share-codes/alice/", params={"code": code})).status_code == 204
        r = await page.goto(f"{base}{accept}")
        assert r is not None and r.status == 404
        await expect(page.locator("main")).to_contain_text("Share not found or expired")
        # an expired code (its time moved back in the database): the error page too
        r = await alice.post("/share-codes/alice/", json={"expires_in": 60})
        assert r.status_code == 200, r.text
        await _expire_share_codes(database_url)
        shown = await page.goto(f"{base}{r.json()['accept_url']}")
        assert shown is not None and shown.status == 404
        await expect(page.locator("main")).to_contain_text("Share not found or expired")
        assert (await alice.get("/shares/alice/")).json()["items"][0]["user"]["name"] == "bob"  # bob's share stays
