"""The real jupyterhub-idle-culler (PyPI, unmodified) against a hub under `base_url = "/jhub/"`, given
`--url http://…/jhub/hub/api`: it follows the API's pagination links and culls through the prefix."""

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
        tmp_path, nats_url, database_url, nats_namespace, base_url="/jhub/", auth={"admin_users": ["admin"]},
        api={"slow_spawn_timeout": 5}, spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
        proxy={"port": free_port(), "activity_interval": 0.5},
    ) as c:
        await ensure_user(c.settings, "admin", admin=True)
        yield c


async def test_idle_culler_under_the_base_url(cluster: Cluster, tmp_path: Path) -> None:
    s = cluster.settings
    base = f"http://127.0.0.1:{s.proxy.port}"
    token = mint_token(s, "admin")
    # relative paths of the shared helpers (/hub/api/…, /user/…) resolve under /jhub/
    async with httpx.AsyncClient(base_url=f"{base}/jhub", headers={"Authorization": f"token {token}"},
                                 timeout=15) as api:
        await wait_for(cluster.hub_up, timeout=30, what=f"the hub\n{cluster.logs()}")
        assert str((await api.get("/hub/api/")).url) == f"{base}/jhub/hub/api/"
        env = {**child_env(s), "JUPYTERHUB_API_TOKEN": token}
        await real_culler_culls_idle(api, f"{base}/jhub/hub/api", env, tmp_path / "culler.log")
