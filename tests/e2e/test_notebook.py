"""Real notebooks: an unmodified jupyterhub-singleuser with JupyterLab, behind fleethub, reached by a
browser-like client (cookies, redirects, forms, XSRF) through the proxy and the hub's OAuth2 provider.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets

from fleethub.shared.net import free_port
from tests.support.browser import follow, log_in
from tests.support.cluster import Cluster, running_stack, wait_for

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-12"}
SINGLEUSER = shutil.which("jupyterhub-singleuser", path=str(Path(sys.executable).parent))


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    assert SINGLEUSER, "jupyterhub-singleuser is not installed next to this Python"
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "hello-alice.txt").write_text("hi")
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS, log_level="INFO",
        auth={"authenticator": "password", "admin_users": ["admin"]},
        api={"slow_spawn_timeout": 30},
        spawner={"cmd": [SINGLEUSER], "notebook_dir": str(tmp_path / "{username}"), "default_url": "/lab",
                 "environment": {"FLEETHUB_E2E_USER": "{username}"}},
        proxy={"port": free_port()},
    ) as c:
        yield c


async def run_code(base: str, browser: httpx.AsyncClient, code: str) -> str:
    """Start a kernel over the REST API and run `code` over the kernel websocket, both through the proxy."""
    xsrf = browser.cookies.get("_xsrf", path="/user/alice/") or ""
    r = await browser.post("/user/alice/api/kernels", json={"name": "python3"}, headers={"X-XSRFToken": xsrf})
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar
                       if c.path in ("/", "/user/alice/", "/hub/"))
    ws_url = base.replace("http://", "ws://") + f"/user/alice/api/kernels/{kernel}/channels"
    msg_id = uuid.uuid4().hex
    request = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "alice", "session": uuid.uuid4().hex,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }
    async with websockets.connect(ws_url, additional_headers={"Cookie": cookie}, open_timeout=20) as ws:
        await ws.send(json.dumps(request))
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_result":
                return str(msg["content"]["data"]["text/plain"])
            if msg["msg_type"] == "error":
                raise AssertionError(msg["content"])


async def test_jupyterlab_through_the_hub_oauth_flow_and_a_kernel_over_the_proxy(cluster: Cluster) -> None:
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await cluster.wait_hub()
    async with (httpx.AsyncClient(base_url=base, timeout=60) as alice,
                httpx.AsyncClient(base_url=base, timeout=30) as bob):
        t_login = time.monotonic()
        await log_in(alice, "alice", PASSWORDS["alice"])
        xsrf = alice.cookies.get("_xsrf", path="/hub/") or ""
        t0 = time.monotonic()
        r = await alice.post("/hub/api/users/alice/server", headers={"X-XSRFToken": xsrf})
        assert r.status_code in (201, 202), r.text

        async def ready() -> bool:
            model = (await alice.get("/hub/api/users/alice", headers={"X-XSRFToken": xsrf})).json()
            return bool(model["servers"].get("", {}).get("ready"))

        await wait_for(ready, timeout=60, interval=0.1, what=f"alice's server\n{cluster.logs()}")
        spawn = time.monotonic() - t0

        # the browser opens JupyterLab: the server sends it through the hub's OAuth flow and back
        page, path = await follow(alice, f"{base}/user/alice/lab")
        assert page.status_code == 200, (path, page.status_code, page.text[:500], cluster.logs())
        assert any("/hub/api/oauth2/authorize" in p for p in path) and any("oauth_callback" in p for p in path)
        assert "JupyterLab" in page.text or "jupyterlab" in page.text.lower()
        assert "jupyterhub-user-alice" in alice.cookies

        # the spawner settings: default_url leads / to JupyterLab, notebook_dir is the root, environment is set
        page, path = await follow(alice, f"{base}/user/alice/")
        assert page.status_code == 200 and path[-1].endswith("/user/alice/lab"), path
        listing = (await alice.get("/user/alice/api/contents")).json()
        assert [c["name"] for c in listing["content"]] == ["hello-alice.txt"]

        assert await run_code(base, alice, "1+1") == "2"
        assert await run_code(base, alice, "__import__('os').environ['FLEETHUB_E2E_USER']") == "'alice'"
        to_kernel = time.monotonic() - t_login

        # bob, logged in, is refused alice's server
        await log_in(bob, "bob", PASSWORDS["bob"])
        page, path = await follow(bob, f"{base}/user/alice/lab")
        assert page.status_code == 403, (path, page.status_code, page.text[:300])
        assert "jupyterhub-user-alice" not in bob.cookies

        print(f"\nJupyterLab spawn POST→ready {spawn:.2f} s; login → kernel answered 1+1 {to_kernel:.2f} s")
