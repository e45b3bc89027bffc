"""The pages' ground in a real browser (Chromium via Playwright), on one hub (auth, api, proxy) with a
deployment's templates: its login.html (extending the built-in one) shows, with the logo and the
stylesheet served by the api through the proxy; a keyboard alone logs in; the error page shows the user's
navigation; every page fits a phone's width (375×740). Screenshots at 1280×800 go to docs/screenshots/ when
FLEETHUB_SCREENSHOTS is set."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, ViewportSize, expect

from fleethub.shared.net import free_port
from fleethub.shared.procs import become_subreaper
from fleethub.shared.settings import load_settings
from tests.conftest import _admin_sql, _in_own_loop, _with_database
from tests.support.browser import PHONE, chromium_page, fits_the_width, log_in
from tests.support.cluster import Cluster, migrated, password_accounts

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-password-1", "admin": "admin-password-1"}
WELCOME = "Welcome to the Example Lab hub"
LOGIN = """{% extends "templates/login.html" %}
{% block login_message %}<p id="custom-welcome">""" + WELCOME + """</p>{% endblock %}
"""
LOGO = (b'<svg xmlns="http://www.w3.org/2000/svg" width="140" height="28" viewBox="0 0 140 28">'
        b'<rect width="28" height="28" rx="6" fill="#2457c5"/><circle cx="14" cy="14" r="6" fill="#fff"/>'
        b'<text x="36" y="20" font-family="sans-serif" font-size="16" font-weight="700" fill="#1d2430" '
        b'textLength="100" lengthAdjust="spacingAndGlyphs">Example Lab</text></svg>')
SIZE: ViewportSize = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_server_url: str, nats_server_url: str) -> Iterator[Cluster]:
    """One hub for the module's tests (a database and a NATS namespace of its own), stopped at the end."""
    tmp = tmp_path_factory.mktemp("pages")
    (tmp / "templates").mkdir()
    (tmp / "templates" / "login.html").write_text(LOGIN)
    (tmp / "logo.svg").write_bytes(LOGO)
    database = f"fh_test_{secrets.token_hex(6)}"
    _admin_sql(pg_server_url, f'CREATE DATABASE "{database}"')
    database_url = _with_database(pg_server_url, database, scheme="postgresql+asyncpg")
    settings = load_settings(
        None, nats_url=nats_server_url, database_url=database_url, nats_namespace="t" + secrets.token_hex(5),
        data_dir=tmp / "data", auth={"authenticator": "password", "admin_users": ["admin"]},
        proxy={"port": free_port()}, api={"allow_named_servers": True},
        pages={"template_paths": [tmp / "templates"], "logo_file": tmp / "logo.svg",
               "template_vars": {"announcement_login": "Maintenance on Sunday from 8:00 to 9:00."}})
    become_subreaper()
    _in_own_loop(migrated(database_url))
    _in_own_loop(password_accounts(settings, PASSWORDS))
    (tmp / "logs").mkdir()
    cluster = Cluster(settings, tmp / "logs")
    try:
        for service in ("auth", "api", "proxy"):
            cluster.start(service)
        yield cluster
    finally:
        cluster.stop()
        _admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _base(stack: Cluster) -> str:
    return f"http://127.0.0.1:{stack.settings.proxy.port}"


async def _screenshot(page: Page, name: str, tmp_path: Path) -> None:
    folder = SCREENSHOTS if os.environ.get("FLEETHUB_SCREENSHOTS") else tmp_path
    await page.screenshot(path=str(folder / name))
    assert (folder / name).stat().st_size > 1000


async def _focused(page: Page) -> str:
    """The focused element, as `tag#id` or `tag:text`."""
    return str(await page.evaluate(
        "() => { const e = document.activeElement;"
        " const img = e.querySelector('img');"
        " return e.tagName.toLowerCase() + (e.id ? '#' + e.id : ':' + (img ? img.alt : e.textContent.trim())); }"))


async def test_the_deployments_login_page_with_logo_and_stylesheet(stack: Cluster, tmp_path: Path) -> None:
    await stack.wait_hub()
    async with chromium_page() as page:
        await page.set_viewport_size(SIZE)
        await page.goto(f"{_base(stack)}/hub/login")
        await page.locator("#custom-welcome").wait_for()
        assert await page.locator("#custom-welcome").inner_text() == WELCOME  # template_paths' login.html
        assert "Maintenance on Sunday" in await page.locator(".announcement").inner_text()  # announcement_login
        assert await page.locator("#username").is_visible()  # the built-in form it extends
        assert await page.locator("text=Sign out").count() == 0  # a visitor: no navigation
        # the logo and the stylesheet come from the api through the proxy, and the browser uses them
        logo = page.locator(".brand img")
        assert await logo.evaluate("img => img.complete && img.naturalWidth") == 140
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(246, 247, 249)"
        await _screenshot(page, "login.png", tmp_path)


async def test_keyboard_only_login_then_the_error_page(stack: Cluster, tmp_path: Path) -> None:
    await stack.wait_hub()
    async with chromium_page() as page:
        await page.set_viewport_size(SIZE)
        await page.goto(f"{_base(stack)}/hub/login")
        assert await _focused(page) == "input#username"  # autofocus
        order = []
        for key in ("Shift+Tab", "Shift+Tab", "Tab", "Tab", "Tab", "Tab"):  # the page's focus order, both ways
            await page.keyboard.press(key)
            order.append(await _focused(page))
        assert order == ["a:fleethub home", "a:Skip to content", "a:fleethub home", "input#username",
                         "input#password", "input#login_submit"], order
        await page.keyboard.press("Shift+Tab")
        await page.keyboard.press("Shift+Tab")
        await page.keyboard.type("alice")
        await page.keyboard.press("Tab")
        await page.keyboard.type("wrong-password")
        await page.keyboard.press("Enter")
        await page.locator("[role=alert]").wait_for()
        assert "Invalid username or password" in await page.locator("[role=alert]").inner_text()
        await page.locator("#password").focus()
        await page.keyboard.type(PASSWORDS["alice"])
        async with page.expect_navigation(url="**/hub/home"):
            await page.keyboard.press("Enter")
        # a server that does not answer: the proxy's error page, with the signed-in user's navigation
        await page.goto(f"{_base(stack)}/hub/error/503?url=/user/alice/lab")
        assert await page.locator("#error-title").inner_text() == "503 Service Unavailable"
        assert await page.locator("[aria-label='Signed in as']").inner_text() == "alice"
        assert await page.locator("code").inner_text() == "/user/alice/lab"
        await _screenshot(page, "error.png", tmp_path)


async def test_every_page_fits_a_phone(stack: Cluster) -> None:
    """At 375×740 no page (login, home, spawn, token, admin, change password, not running) scrolls sideways
    (wide tables scroll inside their box), and the navigation works."""
    base = _base(stack)
    await stack.wait_hub()
    async with httpx.AsyncClient(base_url=base) as client:  # the admin's named server and token, made by the API
        await log_in(client, "admin", PASSWORDS["admin"])
        r = await client.post("/hub/api/users/admin/tokens", json={"auth": {"username": "admin",
                                                                            "password": PASSWORDS["admin"]}})
        auth = {"Authorization": f"token {r.json()['token']}"}
        r = await client.put("/hub/api/users/admin/servers/a-long-server-name-for-phones", json={},
                             headers=auth)
        assert r.status_code == 201, r.text
        r = await client.post("/hub/api/users/admin/tokens", headers=auth, json={"note": "a rather long note " * 4})
        assert r.status_code == 201, r.text
    async with chromium_page() as page:
        await page.set_viewport_size(PHONE)
        await page.goto(f"{base}/hub/login")
        await fits_the_width(page)
        await page.fill("#username", "admin")
        await page.fill("#password", PASSWORDS["admin"])
        await page.click("input[type=submit]")
        await page.wait_for_url(f"{base}/hub/home")
        await expect(page.locator('tr[data-server="a-long-server-name-for-phones"]')).to_have_count(1)
        await fits_the_width(page)
        for path, ready in (("/hub/spawn", "#spawn_form"), ("/hub/token", "#api-tokens tbody tr"),
                            ("/hub/admin", '#user-table tr[data-user="alice"]'),
                            ("/hub/change-password", "form[action='/hub/change-password']"),
                            ("/user/admin/lab/tree/a-notebook-with-a-long-name.ipynb", "form[action^='/hub/spawn/']")):
            await page.goto(f"{base}{path}")
            await page.locator(ready).first.wait_for()
            await fits_the_width(page)
        # the navigation at that width: its links lead where they say
        for name, path in (("Token", "/hub/token"), ("Home", "/hub/home"), ("Admin", "/hub/admin")):
            await page.get_by_role("navigation", name="Hub").get_by_role("link", name=name, exact=True).click()
            await page.wait_for_url(f"{base}{path}")
        await page.get_by_role("navigation", name="Hub").get_by_role("link", name="Sign out").click()
        await page.wait_for_url(re.compile(r".*/hub/login.*"))
