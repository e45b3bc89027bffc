"""Under `base_url = "/jhub/"` (in-process auth + api apps, real NATS and PostgreSQL) the router's trailing-slash
redirects stay under the prefix and name no host: they used to answer `http://<Host header>/hub/...`, outside
the prefix (a 404) and on whatever host the request claimed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleethub.shared.settings import ServiceSettings
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, base_url="/jhub")


@pytest.fixture
async def hub(settings: ServiceSettings) -> AsyncIterator[Hub]:
    async with running_hub(settings) as h:
        yield h


async def test_trailing_slash_redirects_stay_under_the_prefix(hub: Hub) -> None:
    headers = await hub.headers_for("admin", admin=True)
    r = await hub.client.get("/jhub/hub/api/users/", headers=headers)
    assert r.status_code == 307, r.text
    assert r.headers["location"] == "/jhub/hub/api/users", r.headers
    followed = await hub.client.get(r.headers["location"], headers=headers)
    assert followed.status_code == 200 and any(u["name"] == "admin" for u in followed.json()), followed.text

    r = await hub.client.get("/jhub/hub/metrics/?x=1", headers={**headers, "Host": "evil.example"})
    assert r.status_code == 307, r.text
    assert r.headers["location"] == "/jhub/hub/metrics?x=1", r.headers

