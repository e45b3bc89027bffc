"""Two api replicas: a token revoked or a user deleted through one stops working on the other at once."""

from __future__ import annotations

import time

import httpx
import pytest

from fleethub.services.api.app import create_app
from fleethub.shared.settings import ServiceSettings
from tests.support.cluster import wait_for
from tests.support.hub import BASE_URL, Hub, _with_state

pytestmark = pytest.mark.integration


async def _refused(client: httpx.AsyncClient, headers: dict[str, str]) -> bool:
    return (await client.get("/hub/api/user", headers=headers)).status_code == 403


async def test_revocations_reach_every_replica(hub: Hub, settings: ServiceSettings) -> None:
    other = create_app(settings)
    async with other.router.lifespan_context(other) as state:
        transport = httpx.ASGITransport(app=_with_state(other, state))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as replica_b:
            owner = await hub.headers_for("bob")
            made = (await hub.client.post("/hub/api/users/bob/tokens", headers=owner)).json()
            token = {"Authorization": f"token {made['token']}"}
            assert (await replica_b.get("/hub/api/user", headers=token)).status_code == 200  # cached on B
            revoked = await hub.client.delete(f"/hub/api/users/bob/tokens/{made['id']}", headers=owner)
            assert revoked.status_code == 204
            t0 = time.monotonic()
            await wait_for(lambda: _refused(replica_b, token), timeout=4, interval=0.01, what="revoked on B")
            revoked_after = time.monotonic() - t0

            admin = await hub.headers_for("admin", admin=True)
            carol = await hub.headers_for("carol")
            assert (await replica_b.get("/hub/api/user", headers=carol)).status_code == 200  # cached on B
            assert (await hub.client.delete("/hub/api/users/carol", headers=admin)).status_code == 204
            t0 = time.monotonic()
            await wait_for(lambda: _refused(replica_b, carol), timeout=4, interval=0.01, what="deleted user on B")
            deleted_after = time.monotonic() - t0
    print(f"\nrevoked token refused on the other replica after {revoked_after * 1000:.0f} ms, "
          f"deleted user's token after {deleted_after * 1000:.0f} ms (cache TTL 5 s)")
    # well inside the cache TTL: the events did it, not expiry
    assert revoked_after < 2.5 and deleted_after < 2.5
