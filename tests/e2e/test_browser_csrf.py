"""Login CSRF in a real browser (Chromium via Playwright): an attacker's page on another site submits the
login form with the attacker's own valid token, after planting the attacker's pre-session cookie for path
`/` (as code under /user/attacker/ could); the hub refuses it and the victim's browser holds no session."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from html import escape
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from fleethub.services.auth.xsrf import PRESESSION_COOKIE
from fleethub.shared.net import free_port
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.cluster import Cluster, running_stack

pytestmark = pytest.mark.integration

PASSWORDS = {"attacker": "attacker-password-1", "victim": "victim-password-1"}
XSRF_FIELD = re.compile(r'name="_xsrf" value="([^"]+)"')


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    assert Path(CHROMIUM).exists(), "Chromium is not installed (.ci/run installs Debian's chromium)"
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, start=("auth", "api", "proxy"),
                             passwords=PASSWORDS, auth={"authenticator": "password"},
                             proxy={"port": free_port()}) as c:
        yield c


async def _serve(page: bytes) -> asyncio.Server:
    """The attacker's site: every request gets `page`."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(page), page))
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_cross_site_login_form_is_refused_in_chromium(cluster: Cluster) -> None:
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await cluster.wait_hub()
    async with httpx.AsyncClient(base_url=base) as attacker:  # the attacker's own browser: a valid pair
        form = await attacker.get("/hub/login")
        token = XSRF_FIELD.search(form.text)
        presession = attacker.cookies.get(PRESESSION_COOKIE)
        assert token and presession
    fields = {"username": "attacker", "password": PASSWORDS["attacker"], "_xsrf": token.group(1)}
    inputs = "".join(f'<input type="hidden" name="{k}" value="{escape(v, quote=True)}">' for k, v in fields.items())
    evil = await _serve((f'<!doctype html><form id="f" method="post" action="{base}/hub/login">{inputs}</form>'
                         '<script>document.getElementById("f").submit()</script>').encode())
    evil_port = evil.sockets[0].getsockname()[1]
    try:
        async with async_playwright() as pw:
            # attacker.test is another site (resolved to the loopback address by Chromium itself)
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                *CHROMIUM_ARGS, "--host-resolver-rules=MAP attacker.test 127.0.0.1"])
            try:
                context = await browser.new_context()
                await context.add_cookies([{"name": PRESESSION_COOKIE, "value": presession, "domain": "127.0.0.1",
                                            "path": "/", "sameSite": "Lax"}])
                page = await context.new_page()
                seen: list[tuple[int, dict[str, str]]] = []
                page.on("response", lambda r: seen.append((r.status, r.request.headers))
                        if r.url.startswith(f"{base}/hub/login") and r.request.method == "POST" else None)
                await page.goto(f"http://attacker.test:{evil_port}/")
                await page.wait_for_url(re.compile(r".*/hub/login$"))
                await page.wait_for_load_state()
                assert seen and seen[0][0] == 403, seen
                assert seen[0][1].get("origin") == f"http://attacker.test:{evil_port}"  # what the browser said
                assert "session expired" in await page.content()
                assert not [c for c in await context.cookies() if c["name"] == "jupyterhub-hub-login"]
                # the same browser logging in through the hub's own form still works
                await page.goto(f"{base}/hub/login")
                await page.fill("#username", "victim")
                await page.fill("#password", PASSWORDS["victim"])
                await page.click("input[type=submit]")
                await page.wait_for_url(re.compile(r".*/hub/home$"))
                assert "victim" in await page.content()
            finally:
                await browser.close()
    finally:
        evil.close()
        await evil.wait_closed()
