"""The token page in a real browser (Chromium driven by Playwright): a token requested there, with the keyboard
only, works against the API and is revoked there; an OAuth authorization of a hub service
(an unmodified `jupyterhub.services.auth.HubOAuth` one, tests/support/hub_oauth_service.py) is listed and
revoked there."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.integration.test_hub_service import TOKEN, start_service
from tests.support.browser import chromium_page, submit_login, tab_to
from tests.support.cluster import Cluster, running_stack, wait_for

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-password-1"}
# docs/screenshots/ is rewritten only when asked (FLEETHUB_SCREENSHOTS=1); otherwise a scratch folder
SCREENSHOT = (Path(__file__).resolve().parents[2] / "docs" / "screenshots" if os.environ.get("FLEETHUB_SCREENSHOTS")
              else Path(tempfile.mkdtemp(prefix="fleethub-shots-"))) / "token.png"


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    service = {"name": "whoami", "url": f"http://127.0.0.1:{free_port()}", "api_token": TOKEN}
    role = {"name": "whoami-users", "scopes": ["access:services!service=whoami"], "users": ["alice"]}
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS,
                             auth={"authenticator": "password"}, proxy={"port": free_port()}, services=[service],
                             roles=[role]) as c:
        yield c


async def test_request_use_and_revoke_tokens_on_the_token_page(cluster: Cluster, tmp_path: Path) -> None:
    s = cluster.settings
    base = f"http://127.0.0.1:{s.proxy.port}"
    assert s.services[0].url is not None
    proc = start_service(s.proxy.port, int(s.services[0].url.rsplit(":", 1)[1]), tmp_path / "service.log")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=20) as api, chromium_page() as page:
            async def routed() -> bool:  # the hub and the service's route, through the proxy
                r = await api.get("/services/whoami/")
                return await cluster.hub_up() and "/hub/api/oauth2/authorize" in r.headers.get("location", "")

            await wait_for(routed, timeout=30, interval=0.1, what=f"the service routed\n{cluster.logs()}")
            await page.set_viewport_size({"width": 1280, "height": 800})
            await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
            await page.goto(f"{base}/hub/token")
            assert "/hub/login" in page.url
            await submit_login(page, "alice", PASSWORDS["alice"])
            await page.wait_for_url(f"{base}/hub/token")

            # alice lets the service know her (the hub's consent page), so it holds an OAuth token of hers
            consented = datetime.now(UTC).replace(microsecond=0)
            await page.goto(f"{base}/services/whoami/")
            await page.locator("form[action$='/hub/api/oauth2/authorize'] [type=submit]").click()
            await page.wait_for_url(f"{base}/services/whoami/")
            assert json.loads(await page.locator("body").inner_text())["name"] == "alice"

            # a token requested with the keyboard only: a refused scope first (the API's message shown)
            await page.goto(f"{base}/hub/token")
            await tab_to(page, "token-note")  # from the top of the page, as a keyboard user gets there
            await page.keyboard.type("laptop <b>ci</b>")
            await page.keyboard.press("Tab")  # the expiry menu: one down from "Never" is "1 hour"
            await page.keyboard.press("ArrowDown")
            await page.keyboard.press("Tab")
            await page.keyboard.type("admin:users")
            await page.keyboard.press("Enter")
            await page.locator("#token-error").filter(has_text="admin:users").wait_for()
            assert await page.locator("#token-result").is_hidden()
            assert await page.evaluate("document.activeElement.id") == "token-scopes"  # back on the refused field
            await page.keyboard.press("Control+A")
            await page.keyboard.press("Delete")
            await page.keyboard.press("Enter")
            await page.locator("#token-result").wait_for()
            token = await page.input_value("#token-value")
            assert re.fullmatch(r"[0-9a-f]{32}", token)
            assert await page.evaluate("document.activeElement.id") == "token-value"
            assert token not in page.url and await page.locator("#token-error").inner_text() == ""
            row = page.locator("#api-tokens tbody tr", has_text="laptop <b>ci</b>")  # the note as text
            assert await row.count() == 1 and "Never" in await row.inner_text()

            await page.get_by_role("button", name="Copy").click()
            await page.get_by_text("Copied to the clipboard.").wait_for()
            assert await page.evaluate("navigator.clipboard.readText()") == token

            # the token works against the API
            auth = {"Authorization": f"token {token}"}
            me = await api.get("/hub/api/user", headers=auth)
            assert me.status_code == 200 and me.json()["name"] == "alice"
            # what the keyboard chose is what the hub stored: the note, and an expiry of one hour
            mine = [t for t in (await api.get("/hub/api/users/alice/tokens", headers=auth)).json()["api_tokens"]
                    if t["note"] == "laptop <b>ci</b>"]
            assert len(mine) == 1 and mine[0]["expires_at"] is not None, mine
            lifetime = datetime.fromisoformat(mine[0]["expires_at"]) - datetime.fromisoformat(mine[0]["created"])
            assert 3590 <= lifetime.total_seconds() <= 3610, mine
            oauth_row = page.locator("#oauth-clients tbody tr", has_text="Service whoami")
            assert await oauth_row.count() == 1
            # its last use is the service's check of alice's token (GET /hub/api/user), not "Never"
            used = await oauth_row.locator("td").nth(2).locator("time").get_attribute("datetime")
            assert used is not None and datetime.fromisoformat(used) >= consented, used
            # the picture for the docs: from the form's button down, the new token and both lists in view
            await page.evaluate("window.scrollTo(0, document.querySelector('#token-form button[type=submit]')"
                                ".getBoundingClientRect().top + window.scrollY - 24)")
            await page.screenshot(path=str(SCREENSHOT))
            await page.set_viewport_size({"width": 390, "height": 800})  # a phone: the lists scroll in their boxes
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390
            await page.set_viewport_size({"width": 1280, "height": 800})

            # revoked on the page (keyboard): the same call is then refused
            revoke = row.get_by_role("button", name="Revoke")
            await revoke.focus()
            await page.keyboard.press("Enter")
            await row.wait_for(state="detached")
            assert await page.locator("#token-result").is_hidden()  # the revoked token is no longer shown
            assert await page.evaluate("document.activeElement.id") == "api-tokens-heading"
            assert (await api.get("/hub/api/user", headers=auth)).status_code == 403

            # the service's authorization revoked on the page: every OAuth token of it goes
            await oauth_row.get_by_role("button", name="Revoke").click()
            await oauth_row.wait_for(state="detached")
            await page.get_by_role("status").filter(has_text="Access revoked: Service whoami").wait_for()
            await page.reload()
            assert await page.locator("#oauth-clients tbody tr").count() == 0
            assert await page.locator("#oauth-empty").is_visible()
            # checked through the API with a token asked for with alice's password, as JupyterHub's scripts do
            r = await api.post("/hub/api/users/alice/tokens",
                               json={"auth": {"username": "alice", "password": PASSWORDS["alice"]}})
            listed = (await api.get("/hub/api/users/alice/tokens",
                                    headers={"Authorization": f"token {r.json()['token']}"})).json()["api_tokens"]
            assert [t["oauth_client"] for t in listed if t["oauth_client"]] == []
            logs = [*(tmp_path / "logs").glob("*.log"), tmp_path / "service.log"]
            assert len(logs) >= 5 and not [p.name for p in logs if token in p.read_text(errors="replace")]
    finally:
        proc.terminate()
        proc.wait(10)
