"""A real browser (Chromium driven by Playwright) on the home page with named servers: two are created
(one with the keyboard), one is opened through the proxy, stopped and deleted, the rows' states following
without a reload; the not-running page of the stopped named server starts that very server. Saves
docs/screenshots/home.png and not-running.png (1280×800)."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, expect

from fleethub.shared.net import free_port
from tests.support.browser import chromium_page, submit_login, tab_to
from tests.support.cluster import FAKE_SERVER, Cluster, running_stack

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-password-1"}
# docs/screenshots/ is rewritten only when asked (FLEETHUB_SCREENSHOTS=1); otherwise a scratch folder
SCREENSHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots" if os.environ.get("FLEETHUB_SCREENSHOTS")
               else Path(tempfile.mkdtemp(prefix="fleethub-shots-")))
WAIT = 30_000  # ms: a server's start or stop, seen by the page's polling


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS,
        auth={"authenticator": "password"},
        api={"slow_spawn_timeout": 1, "slow_stop_timeout": 1, "allow_named_servers": True,
             "named_server_limit_per_user": 3},
        # each start of alice's takes 2 s: the page sees it under way (the REST start answers after 1 s)
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)],
                 "environment": {"FAKE_PLAN": json.dumps({"alice": {"FAKE_START_DELAY": 2}})}},
        proxy={"port": free_port()},
    ) as c:
        yield c


def state_of(page: Page, server: str) -> Locator:
    return page.locator(f'tr[data-server="{server}"] [data-field="state"]')


# every text the status line shows, as it shows it (exposed below as window.recordStatus)
RECORD_STATUS = """
new MutationObserver(() => {
  const status = document.getElementById("home-status");
  if (status && status.textContent) window.recordStatus(status.textContent);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


async def mark(page: Page) -> None:
    """Set a mark a reload would wipe."""
    await page.evaluate("window.fleethubTestMark = true")


async def still_marked(page: Page) -> bool:
    return bool(await page.evaluate("window.fleethubTestMark === true"))


async def test_named_servers_on_the_home_page_in_chromium(cluster: Cluster) -> None:
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await cluster.wait_hub()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with chromium_page() as page:
        statuses: list[str] = []
        requested: list[str] = []
        await page.expose_function("recordStatus", lambda text: statuses.append(text))
        await page.add_init_script(RECORD_STATUS)
        page.on("request", lambda r: requested.append(r.url))
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.goto(f"{base}/hub/login")
        await submit_login(page, "alice", PASSWORDS["alice"])
        await page.wait_for_url(re.compile(r".*/hub/home$"))
        await expect(page.get_by_text("You have no named servers yet.")).to_be_visible()
        await mark(page)

        # created with the button, then with the keyboard only; each row appears and starts in place
        await page.fill("#server-name", "gpu")
        await page.get_by_role("button", name="Create and start").click()
        await expect(state_of(page, "gpu")).to_have_text("running", timeout=WAIT)
        # the start under way was followed on its progress stream: its messages shown, then its end
        assert f"{base}/hub/api/users/alice/servers/gpu/progress" in [u.split("?")[0] for u in requested]
        assert [t for t in statuses if t.startswith("gpu: ")], statuses
        await expect(page.locator("#home-status")).to_have_text("gpu is running.")
        # keyboard only, from the top of the page: Tab to the name field, type, Enter
        await page.evaluate("document.activeElement && document.activeElement.blur()")
        await tab_to(page, "server-name")
        await page.keyboard.type("cpu")
        await page.keyboard.press("Enter")
        await expect(state_of(page, "cpu")).to_have_text("running", timeout=WAIT)
        assert await page.evaluate("document.activeElement.id") == "server-name"  # ready for the next name
        assert await still_marked(page) and page.url.endswith("/hub/home")
        assert await page.locator("#named-servers tbody tr").evaluate_all("rows => rows.map(r => r.dataset.server)") \
            == ["cpu", "gpu"]  # in name order
        await expect(page.locator("#limit-note")).to_have_text("You have 2 of at most 3 named servers.")

        # opened: the browser reaches the server through the proxy
        await page.get_by_role("link", name="Open gpu").click()
        await page.wait_for_url(f"{base}/user/alice/gpu/")
        await expect(page.get_by_text('"server": "gpu"')).to_be_visible()
        await page.goto(f"{base}/hub/home")
        await mark(page)

        # stopped from the page: stopping, then stopped, with Start and Delete offered
        await page.get_by_role("button", name="Stop gpu").click()
        await expect(state_of(page, "gpu")).to_have_text("stopped", timeout=WAIT)
        await expect(page.get_by_role("button", name="Delete gpu")).to_be_visible()
        await expect(page.get_by_role("button", name="Start gpu")).to_be_visible()
        await expect(page.get_by_role("link", name="Open gpu")).to_be_hidden()
        assert await still_marked(page)
        await page.screenshot(path=str(SCREENSHOTS / "home.png"))

        # the stopped named server's address: the not-running page names it, and "Start it" starts that very
        # server, then lands where the browser was going (path and query), not at the server's root
        await page.goto(f"{base}/user/alice/gpu/lab/tree/a%20b.ipynb?kernel=py3&x=1")
        await expect(page.locator("h1")).to_have_text("Server not running")
        await expect(page.get_by_text("Your server gpu is not running.")).to_be_visible()
        await page.screenshot(path=str(SCREENSHOTS / "not-running.png"))
        await page.get_by_role("button", name="Start it").click()
        await page.wait_for_url(f"{base}/user/alice/gpu/lab/tree/a%20b.ipynb?kernel=py3&x=1", timeout=WAIT)
        landed = json.loads(await page.locator("body").inner_text())
        assert (landed["server"], landed["path"], landed["query"]) == \
            ("gpu", "/user/alice/gpu/lab/tree/a%20b.ipynb", "kernel=py3&x=1")
        await page.goto(f"{base}/hub/home")
        await expect(state_of(page, "gpu")).to_have_text("running")
        await expect(page.get_by_text("Your server is stopped.")).to_be_visible()  # not the default one
        await mark(page)

        # stopped and deleted, the row gone without a reload
        await page.get_by_role("button", name="Stop gpu").click()
        await page.get_by_role("button", name="Delete gpu").click(timeout=WAIT)
        await expect(page.locator('tr[data-server="gpu"]')).to_have_count(0)
        await expect(page.locator("#home-status")).to_have_text("Deleted gpu.")
        assert await still_marked(page)
        await expect(page.locator("#limit-note")).to_have_text("You have 1 of at most 3 named servers.")
    # the deletion reached the hub: a fresh page shows only cpu
    async with chromium_page() as page:
        await page.goto(f"{base}/hub/login")
        await submit_login(page, "alice", PASSWORDS["alice"])
        await page.wait_for_url(re.compile(r".*/hub/home$"))
        assert await page.locator("#named-servers tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.server)") == ["cpu"]
