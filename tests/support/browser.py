"""A browser-like client's steps against a hub through its proxy: the login form, redirects followed."""

from __future__ import annotations

import re

import httpx

XSRF_FIELD = re.compile(r'name="_xsrf" value="([^"]+)"')


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
