"""A configured hub service: routed at /services/<name>/ on every proxy, and an OAuth client of the hub,
used by an unmodified `jupyterhub.services.auth.HubOAuth` service (tests/support/hub_oauth_service.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.support.browser import follow, log_in
from tests.support.cluster import Cluster, running_stack, wait_for

pytestmark = pytest.mark.integration

SERVICE = Path(__file__).resolve().parents[1] / "support" / "hub_oauth_service.py"
TOKEN = "whoami-service-token-0123456789abcdef"
PASSWORDS = {"admin": "admin-password-1", "alice": "alice-password-1", "bob": "bob-password-123"}


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    service = {"name": "whoami", "url": f"http://127.0.0.1:{free_port()}", "api_token": TOKEN}
    # a role lets alice use the service; bob has no such role
    role = {"name": "whoami-users", "scopes": ["access:services!service=whoami"], "users": ["alice"]}
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS,
                             auth={"admin_users": ["admin"]}, proxy={"port": free_port()}, services=[service],
                             roles=[role]) as c:
        yield c


def start_service(settings_port: int, service_port: int, log: Path) -> subprocess.Popen[bytes]:
    """The service, with the environment the hub gives a service (as an operator would set it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETHUB_")}
    env.update({
        "JUPYTERHUB_SERVICE_NAME": "whoami",
        "JUPYTERHUB_API_TOKEN": TOKEN,
        "JUPYTERHUB_CLIENT_ID": "service-whoami",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{settings_port}/hub/api",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/whoami/",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{service_port}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/whoami/oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(["access:services", "access:services!service=whoami"]),
    })
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, str(SERVICE)], env=env, stdout=out, stderr=subprocess.STDOUT)


async def test_a_hub_oauth_service_is_routed_and_identifies_hub_users(cluster: Cluster, tmp_path: Path) -> None:
    s = cluster.settings
    base = f"http://127.0.0.1:{s.proxy.port}"
    svc_url = s.services[0].url
    assert svc_url is not None
    proc = start_service(s.proxy.port, int(svc_url.rsplit(":", 1)[1]), tmp_path / "service.log")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=20) as admin, \
                httpx.AsyncClient(base_url=base, timeout=20) as alice:
            # routed through the proxy (the spawner's reconciler writes the route from the settings)
            async def routed() -> bool:
                r = await admin.get("/services/whoami/")
                # auth and api replicas both registered with the proxy (the service asks the api who logged in)
                to_authorize = "/hub/api/oauth2/authorize" in r.headers.get("location", "")
                return await cluster.hub_up() and r.status_code == 302 and to_authorize

            await wait_for(routed, timeout=30, interval=0.1,
                           what=f"the service routed\n{cluster.logs()}\n{(tmp_path / 'service.log').read_text()}")

            await log_in(admin, "admin", PASSWORDS["admin"])
            page, _ = await follow(admin, "/services/whoami/")
            # a service is not the user's own: the hub asks before identifying them to it
            assert page.status_code == 200 and "the service whoami" in page.text, page.text[:500]
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
            assert fields["client_id"] == "service-whoami"
            r, _ = await follow(admin, await admin.post("/hub/api/oauth2/authorize", data=fields))
            assert r.status_code == 200, (r.status_code, r.text[:500], (tmp_path / "service.log").read_text())
            model = r.json()
            assert model["name"] == "admin" and "access:services!service=whoami" in model["scopes"]

            # alice holds access to this service through a role: after consenting, the service knows her
            await log_in(alice, "alice", PASSWORDS["alice"])
            page, _ = await follow(alice, "/services/whoami/")
            assert page.status_code == 200 and "the service whoami" in page.text, page.text[:500]
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
            r, _ = await follow(alice, await alice.post("/hub/api/oauth2/authorize", data=fields))
            assert r.status_code == 200, (r.status_code, r.text[:500], (tmp_path / "service.log").read_text())
            model = r.json()
            assert model["name"] == "alice" and model["admin"] is False
            assert "access:services!service=whoami" in model["scopes"]

            # a user without access to the service is refused by the hub, and never reaches the service
            async with httpx.AsyncClient(base_url=base, timeout=20) as bob:
                await log_in(bob, "bob", PASSWORDS["bob"])
                r, _ = await follow(bob, "/services/whoami/")
                assert r.status_code == 403 and "whoami" in r.text
    finally:
        proc.terminate()
        proc.wait(10)
