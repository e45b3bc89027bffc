"""An unmodified `jupyterhub.services.auth.HubOAuth` service under `base_url = "/jhub/"`: routed at
/jhub/services/<name>/, sent through the hub's OAuth provider at /jhub/hub/api/oauth2/, with the callback
URI the hub registers for it under the prefix."""

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
from tests.integration.test_hub_service import SERVICE, TOKEN
from tests.support.browser import follow, log_in
from tests.support.cluster import Cluster, running_stack, wait_for

pytestmark = pytest.mark.integration

PASSWORDS = {"admin": "admin-password-1"}


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    service = {"name": "whoami", "url": f"http://127.0.0.1:{free_port()}", "api_token": TOKEN}
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, passwords=PASSWORDS,
                             base_url="/jhub/", auth={"admin_users": ["admin"]}, proxy={"port": free_port()},
                             services=[service]) as c:
        yield c


def _start(proxy_port: int, service_port: int, log: Path) -> subprocess.Popen[bytes]:
    """The service with the environment the hub gives a service under /jhub/ (as an operator would set it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETHUB_")}
    env.update({
        "JUPYTERHUB_SERVICE_NAME": "whoami", "JUPYTERHUB_API_TOKEN": TOKEN, "JUPYTERHUB_CLIENT_ID": "service-whoami",
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{proxy_port}/jhub/hub/api", "JUPYTERHUB_BASE_URL": "/jhub/",
        "JUPYTERHUB_HOST": "", "JUPYTERHUB_SERVICE_PREFIX": "/jhub/services/whoami/",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{service_port}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/jhub/services/whoami/oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(["access:services", "access:services!service=whoami"]),
    })
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, str(SERVICE)], env=env, stdout=out, stderr=subprocess.STDOUT)


async def test_a_hub_oauth_service_under_the_base_url(cluster: Cluster, tmp_path: Path) -> None:
    s = cluster.settings
    svc_url = s.services[0].url
    assert svc_url is not None
    proc = _start(s.proxy.port, int(svc_url.rsplit(":", 1)[1]), tmp_path / "service.log")
    try:
        # relative paths (/hub/login, /services/…) resolve under /jhub/
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.proxy.port}/jhub", timeout=20) as admin:
            async def routed() -> bool:
                r = await admin.get("/services/whoami/")
                to_authorize = r.headers.get("location", "").startswith("/jhub/hub/api/oauth2/authorize")
                return await cluster.hub_up() and r.status_code == 302 and to_authorize

            await wait_for(routed, timeout=60, interval=0.1,
                           what=f"the service routed\n{cluster.logs()}\n{(tmp_path / 'service.log').read_text()}")
            await log_in(admin, "admin", PASSWORDS["admin"])
            page, path = await follow(admin, "/services/whoami/")
            assert page.status_code == 200 and "the service whoami" in page.text, (path, page.text[:500])
            assert 'action="/jhub/hub/api/oauth2/authorize"' in page.text
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
            assert fields["redirect_uri"] == "/jhub/services/whoami/oauth_callback"
            r, path = await follow(admin, await admin.post("/hub/api/oauth2/authorize", data=fields))
            assert r.status_code == 200, (path, r.text[:500], (tmp_path / "service.log").read_text())
            assert str(r.url).endswith("/jhub/services/whoami/")
            assert r.json()["name"] == "admin" and "access:services!service=whoami" in r.json()["scopes"]
    finally:
        proc.terminate()
        proc.wait(10)
