"""A real browser (Chromium driven by Playwright) on the spawn form: the home page's "Start my server"
leads to the form, the second profile is chosen, and the browser lands on the server started with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.browser import chromium_page, submit_login
from tests.support.cluster import Cluster
from tests.support.spawn_form import PROFILE_PASSWORDS, spawn_through_form

pytestmark = pytest.mark.integration


async def test_choose_the_second_profile_and_reach_its_server_in_chromium(
        profiles_cluster: Cluster, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{profiles_cluster.settings.proxy.port}"
    await profiles_cluster.wait_hub()
    async with chromium_page() as page:
        await page.goto(f"{base}/hub/login")
        await submit_login(page, "alice", PROFILE_PASSWORDS["alice"])
        await page.wait_for_url(re.compile(r".*/hub/home$"))
        await page.click("text=Start my server")  # profiles to choose from: the form, nothing started yet
        await page.wait_for_url(re.compile(r".*/hub/spawn$"))
        assert await page.is_checked('input[name="profile"][value="small"]')  # the default one
        assert await page.locator("text=more memory").count() == 1
        await spawn_through_form(page, profile="big", base_url=base)
        # the pending page follows the start's progress, then leads to the server
        await page.wait_for_url(re.compile(r".*/user/alice/.*"), timeout=60_000)
        await page.get_by_text('"user": "alice"').wait_for(timeout=30_000)
    env = json.loads((tmp_path / "big.json").read_text())
    assert env["SIZE"] == "big" and env["MEM_LIMIT"] == str(2 * 1024**3)
    assert not (tmp_path / "small.json").exists()
