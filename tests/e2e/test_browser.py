"""A real browser (Chromium driven by Playwright) on fleethub's pages: log in through the form, start the
server from the home page, wait on the pending page, land in JupyterLab (through the hub's OAuth flow)
and see the user's files; sign out and be sent back to the login page."""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleethub.shared.net import free_port
from tests.support.browser import chromium_page, submit_login
from tests.support.cluster import Cluster, running_stack

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-password-1"}
SINGLEUSER = shutil.which("jupyterhub-singleuser", path=str(Path(sys.executable).parent))


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    assert SINGLEUSER, "jupyterhub-singleuser is not installed next to this Python"
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "notes-of-alice.txt").write_text("hi")
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS,
        auth={"authenticator": "password"}, api={"slow_spawn_timeout": 1},
        spawner={"cmd": [SINGLEUSER], "notebook_dir": str(tmp_path / "{username}"), "default_url": "/lab"},
        proxy={"port": free_port()},
    ) as c:
        yield c


async def test_log_in_start_and_use_jupyterlab_in_chromium(cluster: Cluster, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await cluster.wait_hub()
    async with chromium_page() as page:
        t0 = time.monotonic()
        await page.goto(f"{base}/hub/")
        assert "/hub/login" in page.url
        await submit_login(page, "alice", "wrong-password")
        assert "/hub/login" in page.url and await page.locator(".error").count() == 1  # refused, with a message
        await submit_login(page, "alice", PASSWORDS["alice"])
        await page.wait_for_url(re.compile(r".*/hub/home$"))
        assert "Your server is stopped" in await page.content()
        # the login cookie is HttpOnly: scripts on any page cannot read it
        assert "jupyterhub-hub-login" not in await page.evaluate("document.cookie")

        await page.click("input[value='Start my server']")
        # the pending page reloads itself until the server is ready, then JupyterLab loads via OAuth
        await page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=90_000)
        await page.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
        await page.get_by_text("notes-of-alice.txt").first.wait_for(timeout=60_000)
        to_lab = time.monotonic() - t0
        await page.screenshot(path=str(tmp_path / "jupyterlab.png"))

        # signing out of the hub ends the hub session: the hub's pages ask for a login again
        await page.goto(f"{base}/hub/logout")
        await page.goto(f"{base}/hub/home")
        assert "/hub/login" in page.url
    print(f"\nChromium: /hub/ → logged in → started → JupyterLab showing the user's files in {to_lab:.1f} s")
