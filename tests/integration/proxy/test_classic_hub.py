"""A classic JupyterHub (the `jupyterhub` package, unmodified) using a fleethub proxy cluster as its CHP.

JupyterHub is configured as for an external configurable-http-proxy
(`ConfigurableHTTPProxy.should_start = False`, `api_url`, `auth_token`) pointed at the route API of
one fleethub proxy node; a second node, which the hub never talks to, serves the same routes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.integration.proxy.conftest import ProxyEnv, get
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration

FAKE = Path(__file__).resolve().parents[2] / "support" / "fake_singleuser.py"
CHP_TOKEN = "chp-token-for-the-classic-hub-0123"
SERVICE_TOKEN = "service-token-for-the-classic-hub-0123"


def _hub_config(tmp_path: Path, proxy_port: int, api_port: int) -> Path:
    """A JupyterHub config for an external CHP at `api_port`, public on `proxy_port`."""
    hub_port = free_port()
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(f"""
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{tmp_path}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp_path}/cookie_secret"
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.auth_token = "{CHP_TOKEN}"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [{sys.executable!r}, {str(FAKE)!r}]
c.JupyterHub.services = [{{"name": "tester", "api_token": "{SERVICE_TOKEN}"}}]
c.JupyterHub.load_roles = [{{"name": "tester", "services": ["tester"],
                             "scopes": ["admin:users", "admin:servers", "read:hub"]}}]
""")
    return config


def _start_hub(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETHUB_", "JUPYTERHUB_", "CONFIGPROXY_"))}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=config.parent,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


async def test_classic_jupyterhub_routes_through_a_fleethub_proxy_cluster(env: ProxyEnv, tmp_path: Path) -> None:
    proxy_port, api_port = free_port(), free_port()
    log = tmp_path / "hub.log"
    _, base = env.node(proxy_port, api_port=api_port, auth_token=CHP_TOKEN)
    _, other = env.node()  # another node of the cluster: the hub does not know it exists
    hub = _start_hub(_hub_config(tmp_path, proxy_port, api_port), log)
    headers = {"Authorization": f"token {SERVICE_TOKEN}"}
    try:
        async def hub_through(b: str) -> bool:
            r = await get(f"{b}/hub/api/")
            return r.status_code == 200 and "version" in r.json()

        # the hub adds its own route `/` through the route API at start; both nodes serve it
        await wait_for(lambda: hub_through(base), timeout=60, interval=0.1,
                       what=f"the hub through the proxy\n{log.read_text(errors='replace')[-3000:]}")
        await wait_for(lambda: hub_through(other), timeout=10, what="the hub through the other node")

        async with httpx.AsyncClient(base_url=f"{base}/hub/api", headers=headers, timeout=30) as hubapi:
            assert (await hubapi.post("/users/alice")).status_code == 201
            r = await hubapi.post("/users/alice/server")
            assert r.status_code in (201, 202), r.text

            async def ready() -> bool:
                return bool((await hubapi.get("/users/alice")).json()["servers"].get("", {}).get("ready"))

            await wait_for(ready, timeout=30, interval=0.1, what=f"alice's server\n{log.read_text()[-3000:]}")

            # the hub's route for alice, with its data, as CHP would list it
            async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"token {CHP_TOKEN}"}) as chp:
                routes = (await chp.get(f"http://127.0.0.1:{api_port}/api/routes")).json()
            assert routes["/user/alice"]["user"] == "alice" and routes["/user/alice"]["jupyterhub"] is True
            assert routes["/"].get("hub") is True

            for b in (base, other):  # alice's server through either node
                r = await get(f"{b}/user/alice/api/status")
                assert r.status_code == 200 and r.json()["user"] == "alice", r.text

            assert (await hubapi.delete("/users/alice/server")).status_code in (202, 204)

            async def unrouted() -> bool:
                r = await get(f"{other}/user/alice/api/status")
                return r.status_code != 200 or r.json().get("user") != "alice"

            # the hub deleted the route through the API; the other node follows
            await wait_for(unrouted, timeout=20, interval=0.05, what="alice's route removed on the other node")
    finally:
        hub.terminate()
        try:
            hub.wait(15)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
