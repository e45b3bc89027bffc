"""The spawn form and the spawn-pending page in a real browser (Chromium driven by Playwright), on a whole hub
of real processes whose spawner backend reports its steps as progress (tests/support/progress_backend.py):
the bar moves with each step before the browser is taken to the server; a failed start shows its message and
"Try again"; without JavaScript the page reloads itself to the server, and a link into a stopped server
starts it through the form and lands on that link. Screenshots (1280×800):
docs/screenshots/spawn.png and spawn-pending.png (written there when FLEETHUB_SCREENSHOTS is set)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from fleethub.shared.net import free_port
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, submit_login
from tests.support.cluster import FAKE_SERVER, Cluster, running_stack
from tests.support.progress_backend import FAILURE, STEPS, gate
from tests.support.spawn_form import spawn_through_form

pytestmark = pytest.mark.integration

BACKEND = "tests.support.progress_backend:ProgressBackend"
PASSWORDS = {"gatedann": "gatedann-password-1", "failingbo": "failingbo-password-1", "plainpat": "plainpat-password-1"}
PROFILES = [
    {"display_name": "Small", "slug": "small", "default": True, "description": "1 GB of memory, one core.",
     "overrides": {"mem_limit": "1G", "cpu_limit": 1}},
    {"display_name": "Large", "slug": "large", "description": "4 GB of memory, two cores, for bigger data.",
     "overrides": {"mem_limit": "4G", "cpu_limit": 2}},
    {"display_name": "Container", "slug": "container", "backend": "docker",
     "description": "An image of your choice, in a container.",
     "overrides": {"docker": {"image": "quay.io/jupyter/minimal-notebook:2025-01-06",
                              "allowed_images": {"Minimal": "quay.io/jupyter/minimal-notebook:2025-01-06",
                                                 "Scientific Python": "quay.io/jupyter/scipy-notebook:2025-01-06"}}}},
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
WAIT = 60_000  # ms: a server start through the spawner worker and the proxy
# every value the page's progress bar takes, as it takes it, with the page it was on (exposed below)
RECORD_BAR = """
new MutationObserver((changes) => {
  for (const change of changes) {
    if (change.target.id === "spawn-progress") {
      window.recordBar(change.target.value, location.pathname);
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["value"]});
"""


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS,
        auth={"authenticator": "password"}, api={"slow_spawn_timeout": 1},
        spawner={"backend": BACKEND, "backends": [BACKEND], "cmd": [sys.executable, str(FAKE_SERVER)],
                 "profiles": PROFILES, "environment": {"FAKE_PLAN": json.dumps({"plainpat": {"FAKE_START_DELAY": 3}})}},
        proxy={"port": free_port()},
    ) as c:
        yield c


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def _log_in(page: Page, base: str, user: str) -> None:
    await page.goto(f"{base}/hub/login")
    await submit_login(page, user, PASSWORDS[user])
    await page.wait_for_url(re.compile(r".*/hub/home$"))


def _keep(tmp_path: Path, name: str) -> None:
    if os.environ.get("FLEETHUB_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, SCREENSHOTS / name)


async def _bar(page: Page) -> float:
    value: float = await page.eval_on_selector("#spawn-progress", "bar => bar.value")
    return value


async def test_spawn_pages_in_chromium(cluster: Cluster, tmp_path: Path) -> None:
    # one stack for the three (each start of one costs 10-20 s); each flow has its own user and browser page
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    (cluster.settings.data_dir / "gates").mkdir(parents=True, exist_ok=True)
    await cluster.wait_hub()
    async with chromium() as browser:
        await _the_bar_moves_with_each_step_then_the_server_opens(browser, base, cluster.settings.data_dir, tmp_path)
        await _a_failed_start_shows_its_message_and_try_again(browser, base, cluster.settings.data_dir)
        await _without_javascript_the_page_reloads_to_the_server(browser, base)


async def _the_bar_moves_with_each_step_then_the_server_opens(browser: Browser, base: str, data_dir: Path,
                                                              tmp_path: Path) -> None:
    recorded: list[tuple[float, str]] = []
    page = await browser.new_page(viewport=VIEWPORT)
    await page.expose_function("recordBar", lambda value, path: recorded.append((value, path)))
    await page.add_init_script(RECORD_BAR)
    await _log_in(page, base, "gatedann")
    await page.goto(f"{base}/hub/spawn")
    # the options form: each profile a labelled radio, the container's images a select
    await expect(page.get_by_label("Small")).to_be_checked()
    await expect(page.get_by_text("4 GB of memory, two cores, for bigger data.")).to_be_visible()
    await expect(page.locator('select[name="container:image"] option')).to_have_count(2)
    await page.get_by_label("Large").focus()
    await page.screenshot(path=str(tmp_path / "spawn.png"))
    _keep(tmp_path, "spawn.png")
    await page.keyboard.press("Space")  # keyboard only: the focused radio chosen, Enter submits
    await expect(page.get_by_label("Large")).to_be_checked()
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r".*/hub/spawn-pending/gatedann$"))
    log = page.locator("#progress-log li")
    values: list[float] = []
    for n, step in enumerate(STEPS):  # the start waits at each step until the test lets it go on
        await expect(log.last).to_have_text(step)
        values.append(await _bar(page))
        assert page.url.endswith("/hub/spawn-pending/gatedann")
        if n == 1:
            await page.screenshot(path=str(tmp_path / "spawn-pending.png"))
            _keep(tmp_path, "spawn-pending.png")
        gate(data_dir, "gatedann", n).touch()
    assert values == sorted(values) and len(set(values)) == len(STEPS) and 0 < values[0], values
    await page.wait_for_url(re.compile(r".*/user/gatedann/$"), timeout=WAIT)
    await page.get_by_text('"user": "gatedann"').wait_for(timeout=WAIT)
    # the bar only ever went forward, on the pending page, up to 100 before the browser left it
    on_page = [value for value, path in recorded if path == "/hub/spawn-pending/gatedann"]
    assert [value for value, _ in recorded] == on_page, recorded
    assert on_page == sorted(on_page) and on_page[-1] == 100 and set(values) <= set(on_page), recorded
    assert len(set(on_page)) >= len(STEPS) + 1, recorded


async def _a_failed_start_shows_its_message_and_try_again(browser: Browser, base: str, data_dir: Path) -> None:
    page = await browser.new_page(viewport=VIEWPORT)
    await _log_in(page, base, "failingbo")
    await spawn_through_form(page, profile="small", base_url=base)
    await page.wait_for_url(re.compile(r".*/hub/spawn-pending/failingbo$"))
    await expect(page.locator("#progress-log li").last).to_have_text(STEPS[0])
    gate(data_dir, "failingbo", 0).touch()  # the start fails after its first step
    failure = f"Spawn failed: {FAILURE.format(user='failingbo')}"
    await expect(page.locator("#spawn-error")).to_have_text(failure, timeout=WAIT)  # text: the markup shown
    await expect(page.locator("#spawn-failed")).to_be_visible()
    await expect(page.get_by_role("heading", level=1)).to_have_text("failingbo's server did not start")
    await expect(page.locator("#progress-log li").last).to_have_text(failure)
    assert await page.title() == "Start failed · fleethub"
    again = page.get_by_role("link", name="Try again")
    await expect(again).to_be_focused()
    await page.keyboard.press("Enter")  # back to the form (profiles to choose), nothing started
    await page.wait_for_url(re.compile(r".*/hub/spawn/failingbo$"))
    await expect(page.get_by_label("Small")).to_be_checked()


async def _without_javascript_the_page_reloads_to_the_server(browser: Browser, base: str) -> None:
    page = await browser.new_page(viewport=VIEWPORT, java_script_enabled=False)
    pending: list[int] = []
    page.on("response", lambda r: pending.append(r.status) if "/hub/spawn-pending/" in r.url else None)
    await _log_in(page, base, "plainpat")
    # a link into the stopped server: "Start it" leads to the form, and the start lands on that link
    await page.goto(f"{base}/user/plainpat/tree/notes.ipynb?kernel=py3")
    await expect(page.get_by_text("Your default server is not running.")).to_be_visible()
    await page.get_by_role("link", name="Start it").click()
    await page.wait_for_url(re.compile(r".*/hub/spawn/plainpat\?next="))
    await page.get_by_label("Small").check()
    await page.get_by_role("button", name="Start", exact=True).click()
    await page.wait_for_url(f"{base}/user/plainpat/tree/notes.ipynb?kernel=py3", timeout=WAIT)
    landed = json.loads(await page.locator("body").inner_text())
    assert (landed["user"], landed["path"], landed["query"]) == \
        ("plainpat", "/user/plainpat/tree/notes.ipynb", "kernel=py3")
    # the server took 3 s: the page was shown, reloaded itself (every 2 s), then was sent on to the server
    assert pending.count(200) >= 2 and pending[-1] == 302, pending
