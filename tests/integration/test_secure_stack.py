"""The whole flow under the bus permissions: every service a real process with its own nkey on an
auth-enabled NATS (as `fleethub up` runs it), login → spawn → proxied request → activity → cull → stop,
the api's proxy resync, and not one permission violation on the server or in a service's log."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.bus.natsconfig import seed_file
from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, mint_token, running_stack, wait_for
from tests.support.securenats import SecureNats, secure_nats

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-pass-456"
NS = "sec"


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[SecureNats]:
    with secure_nats(tmp_path / "securenats", NS) as server:
        yield server


@pytest.fixture
async def cluster(tmp_path: Path, secure: SecureNats, database_url: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, secure.url, database_url, NS, start=(),
        passwords={"admin": ADMIN_PASSWORD},
        auth={"authenticator": "password", "admin_users": ["admin"]},
        api={"slow_spawn_timeout": 5},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 2},
        proxy={"port": free_port(), "activity_interval": 0.5},
        culler={"timeout": 4, "every": 0.5},
    ) as c:
        # the services that wait for the api's streams start first: they must not need to declare them
        for service in ("culler", "spawner", "proxy", "auth", "api"):
            c.start(service, nats_nkey_file=str(seed_file(secure.keys, service)))
        yield c


async def test_the_whole_flow_works_under_the_permissions(cluster: Cluster, secure: SecureNats) -> None:
    hub = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    try:
        await cluster.wait_hub(timeout=40)
    except AssertionError:
        raise AssertionError(f"{cluster.logs()}\n==== nats\n{secure.server.log.read_text()[-3000:]}") from None

    async with httpx.AsyncClient(base_url=hub, timeout=10, follow_redirects=False) as browser:
        page = await browser.get("/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf, page.text
        ok = await browser.post("/hub/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                                   "_xsrf": xsrf.group(1)})
        assert ok.status_code in (302, 303), ok.text

    headers = {"Authorization": f"token {mint_token(cluster.settings, 'admin')}"}
    async with httpx.AsyncClient(base_url=hub, headers=headers, timeout=15) as api:
        assert (await api.post("/hub/api/users", json={"usernames": ["alice", "bob"]})).status_code == 201
        for user in ("alice", "bob"):
            r = await api.post(f"/hub/api/users/{user}/server")
            assert r.status_code in (201, 202), r.text

            async def ready(u: str = user) -> bool:
                return bool((await api.get(f"/hub/api/users/{u}")).json()["servers"].get("", {}).get("ready"))

            await wait_for(ready, timeout=20, what=f"{user}'s server ready\n{cluster.logs()}")
        for user in ("alice", "bob"):
            r = await api.get(f"/user/{user}/some/path")
            assert r.status_code == 200 and r.json()["user"] == user, r.text

        # the api asks a spawner worker to reconcile: the table is already right
        r = await api.post("/hub/api/proxy")
        assert r.status_code == 200 and r.json() == {"put": 0, "deleted": 0}, r.text
        assert (await api.get("/hub/api/proxy")).json()["/user/alice/"]["data"]["user"] == "alice"

        # alice's activity (the proxy's) keeps her server; bob's idle one is culled (the culler's stop)
        async def bob_culled() -> bool:
            await api.get("/user/alice/keepalive")
            return "" not in (await api.get("/hub/api/users/bob")).json()["servers"]

        await wait_for(bob_culled, timeout=30, interval=0.3, what=f"bob culled\n{cluster.logs()}")
        assert (await api.get("/hub/api/users/alice")).json()["servers"][""]["ready"]

        r = await api.delete("/hub/api/users/alice/server")
        assert r.status_code in (202, 204), r.text

        async def alice_gone() -> bool:
            return (await api.get("/user/alice/x", follow_redirects=False)).status_code == 302

        await wait_for(alice_gone, what="alice's route gone")

    assert secure.violations() == [], secure.violations()
    logs = "".join(p.read_text(errors="replace") for p in cluster.log_dir.glob("*.log"))
    assert "nats refused" not in logs and "without credentials" not in logs, logs


async def test_auth_brings_the_registry_back_after_a_nats_restart(tmp_path: Path) -> None:
    """The registry bucket is in memory: a restarted NATS has lost it. Proxies may only read it; the
    auth replica announcing itself creates it again, and the proxy sees the entry."""
    import asyncio

    from fleethub.shared.events import RegistryEntry
    from fleethub.shared.registry import announce

    with secure_nats(tmp_path / "securenats", NS, port=free_port()) as secure:
        api, auth, proxy = secure.bus("api"), secure.bus("auth"), secure.bus("proxy")
        task = None
        try:
            for b in (api, auth, proxy):
                await b.connect()
            await api.ensure_topology()
            await api.close()  # only auth runs from here on
            entry = RegistryEntry(service="auth", replica="a1", url="http://127.0.0.1:40111")
            task = asyncio.create_task(announce(auth, entry, interval=0.2))
            await wait_for(lambda: _keys(proxy), what="the entry")
            secure.server.stop()
            secure.server.start()  # same port, same data: the file streams are back, the registry is not
            await wait_for(lambda: _keys(proxy), timeout=20, what="the entry after the restart")
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            for b in (api, auth, proxy):
                await b.close()
        assert [v for v in secure.violations() if ":test-" in v] == []


async def _keys(bus: object) -> bool:
    from fleethub.shared.bus import Bus, BusError

    assert isinstance(bus, Bus)
    try:
        return "auth.a1" in await bus.registry.keys()
    except BusError:
        return False
