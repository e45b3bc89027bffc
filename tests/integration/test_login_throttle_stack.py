"""The login throttle in a real deployment: two auth replicas behind the proxy, the client address as the
proxy reports it (believing X-Forwarded-For only from `proxy.trusted_proxies`)."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.support.cluster import running_stack, wait_for
from tests.support.hub import XSRF_FIELD

pytestmark = pytest.mark.integration

THROTTLE = {"throttle_free_attempts": 2, "throttle_client_free_attempts": 3, "throttle_base_delay_seconds": 2.0,
            "throttle_max_delay_seconds": 4.0, "throttle_client_max_delay_seconds": 4.0}
_gets = itertools.count()


async def _login(base: str, user: str, password: str, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as c:
        for _ in range(1 + next(_gets) % 2):  # an odd or even number of GETs: the POSTs reach both replicas
            page = await c.get("/hub/login")
        m = XSRF_FIELD.search(page.text)
        assert m, page.text
        return await c.post("/hub/login", data={"username": user, "password": password, "_xsrf": m.group(1)})


async def test_throttle_through_the_proxy_across_two_auth_replicas(tmp_path: Path, nats_url: str, database_url: str,
                                                                   nats_namespace: str) -> None:
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, start=("auth", "auth", "api", "proxy"),
                             passwords={"alice": "alice-password"}, log_level="INFO", auth=THROTTLE,
                             proxy={"port": free_port(), "trusted_proxies": ["127.0.0.1"]}) as cluster:
        await cluster.wait_hub()
        trusting = f"http://127.0.0.1:{cluster.settings.proxy.port}"
        port = free_port()
        cluster.start("proxy", proxy={"port": port, "trusted_proxies": []})
        plain = f"http://127.0.0.1:{port}"

        async def plain_up() -> bool:
            async with httpx.AsyncClient(timeout=5) as c:
                try:
                    return (await c.get(f"{plain}/hub/login")).status_code == 200
                except httpx.TransportError:
                    return False

        await wait_for(plain_up, timeout=30, what=f"the second proxy\n{cluster.logs()}")

        # per user, whichever replica answers: two failures, then even the right password waits
        for i in range(2):
            assert (await _login(trusting, "alice", "wrong-password", f"10.1.0.{i}")).status_code == 403
        for i in range(2):
            r = await _login(trusting, "alice", "alice-password", f"10.1.1.{i}")
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
        logs = [p.read_text() for p in sorted(cluster.log_dir.glob("auth-*.log"))]
        assert len(logs) == 2 and all("login for 'alice'" in log for log in logs), cluster.logs()

        # per client, from the address the trusting proxy reports (its X-Forwarded-For chain is believed)
        for i in range(3):
            assert (await _login(trusting, f"sprayed{i}", "Summer2026!", "10.9.9.9")).status_code == 403
        r = await _login(trusting, "sprayed9", "Summer2026!", "10.9.9.9")
        assert r.status_code == 429, r.text
        assert (await _login(trusting, "sprayed9", "Summer2026!", "10.8.8.8")).status_code == 403

        # a proxy that trusts no one ignores a client's own X-Forwarded-For: rotating it gains nothing
        for i in range(3):
            assert (await _login(plain, f"rotated{i}", "Summer2026!", f"10.7.7.{i}")).status_code == 403
        r = await _login(plain, "rotated9", "Summer2026!", "10.7.7.99")
        assert r.status_code == 429, r.text
