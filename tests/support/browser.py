"""A browser-like client's steps against a hub through its proxy: the login form, redirects followed; and a
real Chromium page (Playwright) for the end-to-end tests."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from playwright.async_api import Page, async_playwright

XSRF_FIELD = re.compile(r'name="_xsrf" value="([^"]+)"')
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root, on a machine without outside network: no sandbox, and no background calls home
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


async def log_in(browser: httpx.AsyncClient, user: str, password: str) -> None:
    """Log in with the form (its XSRF token first), as a browser does."""
    page = await browser.get("/hub/login")
    xsrf = XSRF_FIELD.search(page.text)
    assert xsrf, page.text
    r = await browser.post("/hub/login", data={"username": user, "password": password, "_xsrf": xsrf.group(1)})
    assert r.status_code == 302, r.text


async def follow(browser: httpx.AsyncClient, start: str | httpx.Response,
                 limit: int = 12) -> tuple[httpx.Response, list[str]]:
    """GET `start` (or take its response) and follow redirects; returns the last response and the URLs."""
    r = await browser.get(start) if isinstance(start, str) else start
    seen = [str(r.url)]
    while r.status_code in (301, 302, 303, 307) and len(seen) < limit:
        url = str(r.url.join(r.headers["location"]))
        seen.append(url)
        r = await browser.get(url)
    return r, seen


@asynccontextmanager
async def chromium_page() -> AsyncIterator[Page]:
    """A page of a fresh headless Chromium, closed with its browser at the end."""
    assert Path(CHROMIUM).exists(), "Chromium is not installed (.ci/run installs Debian's chromium)"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def submit_login(page: Page, user: str, password: str) -> None:
    """Fill in the login form `page` shows and submit it."""
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("input[type=submit]")


async def tab_to(page: Page, element_id: str, limit: int = 60) -> int:
    """Press Tab from where the focus is until the element `#element_id` has it, as a keyboard user does;
    returns the presses. Fails if it is never reached (not focusable, hidden, or outside the tab order)."""
    for presses in range(1, limit + 1):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return presses
    raise AssertionError(f"#{element_id} not reached with {limit} presses of Tab")


PHONE = {"width": 375, "height": 740}
# what overflows the viewport sideways (scrollWidth wider than it), and any element reaching past its right edge
OVERFLOW = """() => {
  const width = window.innerWidth;
  const wide = [...document.body.querySelectorAll("*")].filter((e) => {
    const box = e.getBoundingClientRect();
    return box.width > 0 && box.right > width + 1 && !(e.parentElement && e.parentElement.closest(".table-wrap"));
  }).map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : e.className ? "." + e.className : ""));
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, wide: wide.slice(0, 10)};
}"""


async def fits_the_width(page: Page) -> None:
    """Assert the page needs no horizontal scroll at its viewport's width (wide tables scroll inside their
    `.table-wrap` box) and its navigation links are all in view and usable."""
    seen = await page.evaluate(OVERFLOW)
    assert seen["scrollWidth"] <= seen["innerWidth"] and not seen["wide"], seen
    for link in await page.locator("nav a, nav button").all():
        if await link.is_visible():
            box = await link.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= seen["innerWidth"] + 1, box
