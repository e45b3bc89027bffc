"""The whole system as real processes: login, spawn, routing through two proxy nodes, culling, stop."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, mint_token, running_stack, wait_for

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-pass-123"


@pytest.fixture
async def cluster(
    tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str
) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace,
        start=("auth", "api", "spawner", "spawner", "proxy", "culler"),
        passwords={"admin": ADMIN_PASSWORD},
        log_level="INFO",
        auth={"authenticator": "password", "admin_users": ["admin"]},
        api={"slow_spawn_timeout": 5},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 2},
        proxy={"port": free_port(), "activity_interval": 0.5},
        culler={"timeout": 4, "every": 0.5},
    ) as c:
        c.second_proxy_port = free_port()  # type: ignore[attr-defined]
        c.start("proxy", proxy={"port": c.second_proxy_port})  # type: ignore[attr-defined]
        yield c


async def test_walking_skeleton(cluster: Cluster) -> None:
    s = cluster.settings
    hub = f"http://127.0.0.1:{s.proxy.port}"
    hub2 = f"http://127.0.0.1:{cluster.second_proxy_port}"  # type: ignore[attr-defined]
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as anon:

        async def api_up(base: str) -> bool:
            r = await anon.get(f"{base}/hub/api/")
            return r.status_code == 200 and r.json()["version"].startswith("5.")

        try:
            await wait_for(lambda: api_up(hub), timeout=30, what="hub API through proxy 1")
            await wait_for(lambda: api_up(hub2), timeout=30, what="hub API through proxy 2")
            await wait_for(
                lambda: _status(anon, f"{hub}/hub/login", 200), timeout=30, what="login page through the proxy"
            )
        except AssertionError:
            raise AssertionError(cluster.logs()) from None
        print(f"\nall services answering through both proxies after {time.monotonic() - started:.2f}s")

    # log in through the form, with its XSRF token
    async with httpx.AsyncClient(base_url=hub, timeout=10, follow_redirects=False) as browser:
        page = await browser.get("/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf, page.text
        bad = await browser.post("/hub/login", data={"username": "admin", "password": "wrong", "_xsrf": xsrf.group(1)})
        assert bad.status_code == 403
        page = await browser.get("/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf
        ok = await browser.post(
            "/hub/login", data={"username": "admin", "password": ADMIN_PASSWORD, "_xsrf": xsrf.group(1)}
        )
        assert ok.status_code in (302, 303), ok.text
        assert "jupyterhub-hub-login" in browser.cookies
        home = await browser.get("/hub/home")
        assert home.status_code == 200 and "admin" in home.text

    token = mint_token(s, "admin")
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=hub, headers=headers, timeout=15) as api:
        r = await api.post("/hub/api/users", json={"usernames": ["alice", "bob"]})
        assert r.status_code == 201, r.text

        ready_times = {}
        for user in ("alice", "bob"):
            t0 = time.monotonic()
            r = await api.post(f"/hub/api/users/{user}/server")
            assert r.status_code in (201, 202), r.text

            async def ready(u: str = user) -> bool:
                model = (await api.get(f"/hub/api/users/{u}")).json()
                return bool(model["servers"].get("", {}).get("ready"))

            await wait_for(ready, timeout=20, what=f"{user}'s server ready")
            ready_times[user] = time.monotonic() - t0
        print(f"spawn-to-ready (API POST → ready in the API): {ready_times}")

        # each user's URL reaches that user's server, through both proxy nodes
        for base in (hub, hub2):
            for user in ("alice", "bob"):
                r = await api.get(f"{base}/user/{user}/some/path?x=1")
                assert r.status_code == 200, (base, user, r.status_code, r.text)
                body = r.json()
                assert body["user"] == user and body["path"] == f"/user/{user}/some/path", body

        # the proxy table is visible through the API in JupyterHub's shape
        table = (await api.get("/hub/api/proxy")).json()
        assert table["/user/alice/"]["data"]["user"] == "alice"

        # bob stays idle, alice gets traffic: the culler stops bob's server only
        async def bob_culled() -> bool:
            await api.get(f"{hub}/user/alice/keepalive")
            model = (await api.get("/hub/api/users/bob")).json()
            return "" not in model["servers"]

        t0 = time.monotonic()
        await wait_for(bob_culled, timeout=30, interval=0.3, what="the culler to stop bob's idle server")
        print(f"bob's idle server culled {time.monotonic() - t0:.1f}s after it became eligible to watch")
        alice = (await api.get("/hub/api/users/alice")).json()
        assert alice["servers"][""]["ready"], alice

        # bob's route is gone from every proxy node: a request now goes to the hub
        for base in (hub, hub2):
            await wait_for(lambda b=base: _status(api, f"{b}/user/bob/x", 302), what=f"bob's route gone at {base}")

        # stopping alice's server through the API removes her route everywhere too
        r = await api.delete("/hub/api/users/alice/server")
        assert r.status_code in (202, 204), r.text
        for base in (hub, hub2):
            await wait_for(lambda b=base: _status(api, f"{b}/user/alice/x", 302), what=f"alice's route gone at {base}")
        r = await api.get(f"{hub}/user/alice/x", follow_redirects=False)
        assert r.headers["location"].startswith("/hub/user/alice/x")


async def _status(client: httpx.AsyncClient, url: str, status: int) -> bool:
    r = await client.get(url, follow_redirects=False)
    return r.status_code == status

