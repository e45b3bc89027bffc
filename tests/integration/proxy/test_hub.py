"""`/hub/` traffic: round-robin over the live auth/api replicas of the registry bucket."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.proxy.conftest import ProxyEnv, get
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


async def _backends(base: str, path: str, n: int = 8) -> Counter[str]:
    return Counter([(await get(base + path)).headers.get("x-backend", "") for _ in range(n)])


async def test_hub_traffic_is_balanced_over_live_replicas(env: ProxyEnv) -> None:
    api1, api2, auth = await env.backend("api1"), await env.backend("api2"), await env.backend("auth")
    _, base = env.node()

    async def refused() -> bool:
        r = await get(f"{base}/hub/api/users")
        return r.status_code == 503
    await wait_for(refused, timeout=20, what="node up")
    r = await get(f"{base}/hub/api/users")
    assert r.json() == {"status": 503, "message": "No api service is available right now; try again shortly."}
    r = await get(f"{base}/hub/login")
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")

    await env.replica("api", "a1", api1.url)
    await env.replica("api", "a2", api2.url)
    await env.replica("auth", "x1", auth.url)

    async def both() -> bool:
        return set(await _backends(base, "/hub/api/users")) == {"api1", "api2"}

    await wait_for(both, what="both api replicas in use")
    spread = await _backends(base, "/hub/home", 10)
    assert spread == Counter({"api1": 5, "api2": 5}), spread  # round robin, not random
    for path in ("/hub/login?next=/hub/home", "/hub/logout", "/hub/signup", "/hub/oauth_callback?code=x",
                 "/hub/api/oauth2/authorize?client_id=c", "/hub/api/oauth2/token"):
        assert (await get(base + path)).headers["x-backend"] == "auth", path
    for path in ("/hub/", "/hub", "/hub/api/", "/hub/user/alice/", "/hub/spawn", "/hub/loginx", "/services/x/",
                 "/favicon.ico"):
        assert (await get(base + path)).headers["x-backend"] in ("api1", "api2"), path
    assert (await get(f"{base}/hub/api/users")).json()["path"] == "/hub/api/users"

    # a deleted registry key (a replica shutting down) takes the replica out at once
    await env.unregister("api", "a1")

    async def only_api2() -> bool:
        return set(await _backends(base, "/hub/home")) == {"api2"}

    await wait_for(only_api2, what="deleted replica dropped")

    # a replica that died without unregistering: its key is still there (until the TTL), but a
    # refused connection drops it and the request is retried on another replica
    await env.replica("api", "a1", api1.url)
    await wait_for(both, what="api1 back")
    await api1.stop()
    answers = [await get(f"{base}/hub/home") for _ in range(8)]
    assert [r.status_code for r in answers] == [200] * 8
    assert {r.headers["x-backend"] for r in answers} == {"api2"}

    # no replica left at all
    await env.unregister("api", "a2")
    await env.unregister("api", "a1")

    async def none_left() -> bool:
        return (await get(f"{base}/hub/api/users")).status_code == 503

    await wait_for(none_left, what="no api replica → 503")
    assert (await get(f"{base}/hub/login")).headers["x-backend"] == "auth"

