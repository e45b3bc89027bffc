"""The real jupyterhub-idle-culler (PyPI, unmodified) against fleethub's REST API.

It lists ready servers with JupyterHub's pagination, reads their `last_activity` (fed by the proxy's
activity batches), and stops the idle ones through the API: an idle server is culled while a server
with traffic through the proxy is kept.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from fleethub.shared.settings import child_env
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for
from tests.support.culling import real_culler_culls_idle

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(  # no fleethub culler: the PyPI one does the work
        tmp_path, nats_url, database_url, nats_namespace, auth={"admin_users": ["admin"]},
        api={"slow_spawn_timeout": 5}, spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
        proxy={"port": free_port(), "activity_interval": 0.5},
    ) as c:
        await ensure_user(c.settings, "admin", admin=True)
        yield c


async def test_jupyterhub_idle_culler_culls_the_idle_server_and_keeps_the_busy_one(cluster: Cluster,
                                                                                    tmp_path: Path) -> None:
    s = cluster.settings
    base = f"http://127.0.0.1:{s.proxy.port}"
    token = mint_token(s, "admin")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"token {token}"}, timeout=15) as api:
        await wait_for(lambda: _ok(api, "/hub/api/"), timeout=30, what=f"the hub\n{cluster.logs()}")
        env = {**child_env(s), "JUPYTERHUB_API_TOKEN": token}
        await real_culler_culls_idle(api, f"{base}/hub/api", env, tmp_path / "culler.log")


async def _ok(api: httpx.AsyncClient, path: str) -> bool:
    return (await api.get(path)).status_code == 200
