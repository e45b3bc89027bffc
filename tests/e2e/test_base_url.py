"""The whole hub under `base_url = "/jhub/"` in a real browser (Chromium driven by Playwright), on real processes
with an unmodified jupyterhub-singleuser + JupyterLab: log in at /jhub/hub/login, start the server from the home
page, open JupyterLab at /jhub/user/<name>/ (the server's OAuth with the hub under the prefix), get a token on
the token page and use it on /jhub/hub/api; paths outside the prefix are not the hub's."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.support.browser import chromium_page, submit_login
from tests.support.cluster import Cluster, running_stack

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-password-1"}
SINGLEUSER = shutil.which("jupyterhub-singleuser", path=str(Path(sys.executable).parent))
WAIT = 90_000  # ms: a real JupyterLab start on a loaded machine


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    assert SINGLEUSER, "jupyterhub-singleuser is not installed next to this Python"
    (tmp_path / "alice").mkdir()
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS, base_url="/jhub/",
        auth={"authenticator": "password", "admin_users": ["alice"]}, api={"slow_spawn_timeout": 1},
        spawner={"cmd": [SINGLEUSER], "notebook_dir": str(tmp_path / "{username}"), "default_url": "/lab"},
        proxy={"port": free_port()},
    ) as c:
        yield c


async def test_jupyterlab_token_and_api_under_the_base_url(cluster: Cluster) -> None:
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await cluster.wait_hub()
    async with httpx.AsyncClient(base_url=base, timeout=30) as client, chromium_page() as page:
        # paths outside the prefix are not the hub's: / is sent into it, the rest is a 404 of the proxy
        r = await client.get("/")
        assert r.status_code == 302 and r.headers["location"] == "/jhub/hub/"
        for path in ("/hub/login", "/hub/api/", "/hub/home", "/user/alice/"):
            r = await client.get(path)
            assert r.status_code == 404 and "/jhub/" in r.text, (path, r.status_code, r.text[:200])
        outside = await page.goto(f"{base}/hub/login")
        assert outside is not None and outside.status == 404
        assert await page.locator("form#login, #username").count() == 0

        # the address `fleethub up` prints leads to the login page; sign in there
        await page.goto(f"{base}/jhub/")
        assert page.url.startswith(f"{base}/jhub/hub/login"), page.url
        await submit_login(page, "alice", PASSWORDS["alice"])
        await page.wait_for_url(f"{base}/jhub/hub/home")
        cookies = {c["name"]: c["path"] for c in await page.context.cookies()}
        assert cookies["jupyterhub-hub-login"] == "/jhub/hub/", cookies
        assert all(path.startswith("/jhub/") for path in cookies.values()), cookies

        # start the server from the home page; the spawn-pending page takes the browser to JupyterLab
        await page.get_by_role("button", name="Start my server").click()
        # JupyterLab under the prefix; a redirect on the way may leave an empty query ("lab?"), as seen in CI
        await page.wait_for_url(re.compile(re.escape(f"{base}/jhub/user/alice/lab") + r"\??$"), timeout=WAIT)
        await page.locator(".jp-LabShell").wait_for(timeout=WAIT)
        cookies = {c["name"]: c["path"] for c in await page.context.cookies()}
        assert cookies.get("jupyterhub-user-alice") == "/jhub/user/alice/", cookies  # its OAuth with the hub
        contents = await page.evaluate("""() => {
            const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
            return fetch("/jhub/user/alice/api/contents", {headers: {"X-XSRFToken": decodeURIComponent(xsrf)}})
              .then((r) => r.status);
        }""")  # the server's own API, with its cookie
        assert contents == 200

        # a token from the token page, used on the API under the prefix
        await page.goto(f"{base}/jhub/hub/token")
        await page.locator("#token-form button[type=submit]").click()
        await page.locator("#token-result").wait_for()
        token = await page.input_value("#token-value")
        assert re.fullmatch(r"[0-9a-f]{32}", token)
        auth = {"Authorization": f"token {token}"}
        me = await client.get("/jhub/hub/api/user", headers=auth)
        assert me.status_code == 200 and me.json()["name"] == "alice"
        model = (await client.get("/jhub/hub/api/users/alice", headers=auth)).json()
        assert model["server"] == "/jhub/user/alice/", model
        assert model["servers"][""]["url"] == "/jhub/user/alice/"
        assert model["servers"][""]["progress_url"] == "/jhub/hub/api/users/alice/server/progress"
        assert (await client.get("/hub/api/user", headers=auth)).status_code == 404

        # the admin panel's script calls the API under the prefix: it lists alice and her running server
        await page.get_by_role("link", name="Admin").click()
        await page.wait_for_url(f"{base}/jhub/hub/admin")
        server = page.locator('#user-table tr[data-user="alice"] li[data-server=""] [data-field="state"]')
        await server.wait_for()
        # stopped through the API under the prefix
        stop = await client.delete("/jhub/hub/api/users/alice/server", headers=auth)
        assert stop.status_code in (202, 204), stop.text
