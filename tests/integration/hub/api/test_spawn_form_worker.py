"""The spawn form on a whole hub (real processes, a real spawner worker): a posted profile starts with
that profile's settings — its environment and `mem_limit` (MEM_LIMIT) in the server's environment — and
the options are recorded with the profile's slug."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.browser import follow, log_in
from tests.support.cluster import Cluster, mint_token, wait_for
from tests.support.spawn_form import PROFILE_PASSWORDS, spawn_through_form

pytestmark = pytest.mark.integration


async def test_a_profile_posted_through_the_form_starts_with_its_settings(
        profiles_cluster: Cluster, tmp_path: Path) -> None:
    await profiles_cluster.wait_hub()
    base = f"http://127.0.0.1:{profiles_cluster.settings.proxy.port}"
    token = mint_token(profiles_cluster.settings, "alice")
    api = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as browser:
        await log_in(browser, "alice", PROFILE_PASSWORDS["alice"])
        r = await spawn_through_form(browser, profile="big")
        assert r is not None and r.status_code == 302, r.text
        # while the server comes up, the pending page lists the worker's progress messages
        async def progress_shown() -> bool:
            page = await browser.get("/hub/spawn-pending/alice")
            return "<li>Server requested</li><li>Spawning server...</li>" in page.text

        await wait_for(progress_shown, timeout=20, interval=0.1, what="the spawn's progress on the pending page")
        # the pending page reloads until the server is ready, then leads to it
        async def reached() -> httpx.Response | None:
            last, _ = await follow(browser, "/hub/spawn-pending/alice")
            return last if last.url.path.startswith("/user/alice/") and last.status_code == 200 else None

        served = await wait_for(reached, timeout=30, interval=0.2, what=f"alice's server\n{profiles_cluster.logs()}")
        assert served.json()["user"] == "alice"
        env = json.loads((tmp_path / "big.json").read_text())
        assert env["SIZE"] == "big" and env["MEM_LIMIT"] == str(2 * 1024**3) and env["CPU_LIMIT"] == "2"
        assert not (tmp_path / "small.json").exists()
        model = (await browser.get("/hub/api/users/alice", headers=api)).json()
        assert model["servers"][""]["user_options"] == {"profile": "big"}

        r = await browser.delete("/hub/api/users/alice/server", headers=api)
        assert r.status_code in (202, 204)
        async def gone() -> bool:
            return (await browser.get("/hub/api/users/alice", headers=api)).json()["servers"] == {}

        await wait_for(gone, timeout=20, what="the server stopped")
        r = await browser.get("/user/alice/api")  # no longer routed: the proxy sends the browser to the hub
        assert r.status_code in (302, 303, 307) and r.headers["location"].startswith("/hub/"), r.status_code
