"""Ready means reachable: the moment the API calls a server ready, every proxy node serves its route;
and a browser sent to the hub for a ready server a node does not serve yet is not bounced in a loop."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.bus import Bus
from fleethub.shared.names import route_key
from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

STORM = 30


@pytest.fixture
async def stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace,
        start=("auth", "api", "spawner", "spawner", "proxy"),
        log_level="INFO",
        api={"slow_spawn_timeout": 60},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
        proxy={"port": free_port()},
    ) as c:
        await ensure_user(c.settings, "admin", admin=True)
        second = free_port()
        c.start("proxy", proxy={"port": second})
        c.bases = [f"http://127.0.0.1:{c.settings.proxy.port}", f"http://127.0.0.1:{second}"]  # type: ignore[attr-defined]
        for base in c.bases:  # type: ignore[attr-defined]
            await wait_for(lambda b=base: _answers(f"{b}/hub/api/", 200), timeout=60,
                           what=f"the hub API through {base}\n{c.logs()}")
        yield c


async def _answers(url: str, status: int) -> bool:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url)).status_code == status


async def _ready_by_progress(api: httpx.AsyncClient, user: str) -> None:
    """Follow the progress stream of a spawn the POST answered 202 for, to its `ready` event."""
    async with api.stream("GET", f"/hub/api/users/{user}/server/progress", timeout=120) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:") and json.loads(line[5:]).get("ready"):
                return
    raise AssertionError(f"{user}'s progress stream ended without ready")


async def test_every_server_the_api_calls_ready_answers_through_both_proxy_nodes(stack: Cluster) -> None:
    bases: list[str] = stack.bases  # type: ignore[attr-defined]
    headers = {"Authorization": f"token {mint_token(stack.settings, 'admin')}"}
    users = [f"storm{i}" for i in range(STORM)]
    async with httpx.AsyncClient(base_url=bases[0], headers=headers, timeout=120,
                                 limits=httpx.Limits(max_connections=2 * STORM + 4)) as api:
        r = await api.post("/hub/api/users", json={"usernames": users})
        assert r.status_code == 201, r.text
        seen: dict[str, list[int]] = {}
        answers: dict[str, int] = {}

        async def spawn_and_probe(user: str) -> None:
            r = await api.post(f"/hub/api/users/{user}/server")
            answers[user] = r.status_code
            assert r.status_code in (201, 202), r.text
            if r.status_code == 202:
                await _ready_by_progress(api, user)
            # the API says ready: right now, through both nodes at once, the server itself answers
            probes = await asyncio.gather(*(api.get(f"{b}/user/{user}/api", follow_redirects=False) for b in bases))
            seen[user] = [p.status_code for p in probes]
            for p in probes:
                if p.status_code == 200:
                    assert p.json()["user"] == user, p.text

        await asyncio.gather(*(spawn_and_probe(u) for u in users))
    not_served = {u: s for u, s in seen.items() if s != [200, 200]}
    print(f"\n{STORM} spawns: POST answers {sorted(answers.values())}; not served at ready: {not_served}")
    assert not not_served, f"ready but not served through both nodes: {not_served}\n{stack.logs()}"


async def test_the_hub_waits_before_sending_a_browser_back_to_a_server_a_node_does_not_serve(
        stack: Cluster) -> None:
    """A ready server whose route a node lacks: the hub's `/hub/user/…` waits longer before each redirect
    back, so a browser following redirects reaches the server once the route is back rather than loop."""
    base = stack.bases[0]  # type: ignore[attr-defined]
    headers = {"Authorization": f"token {mint_token(stack.settings, 'admin')}"}
    bus = Bus(stack.settings.nats_url, stack.settings.nats_namespace, "test-redirect")
    await bus.connect()
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as api:
            assert (await api.post("/hub/api/users", json={"usernames": ["alice"]})).status_code == 201
            assert (await api.post("/hub/api/users/alice/server")).status_code == 201
            route = await bus.routes.get(route_key("alice"))
            assert route is not None
            await bus.routes.delete(route_key("alice"))  # no node serves it; the database says running
            await wait_for(lambda: _answers(f"{base}/user/alice/x", 302), what="alice's route gone from the node")

            hops: list[tuple[int, str, float]] = []
            t0 = time.monotonic()

            async def browse() -> httpx.Response:
                url = "/user/alice/x"
                for _ in range(12):
                    r = await api.get(url, follow_redirects=False)
                    hops.append((r.status_code, r.headers.get("location", ""), time.monotonic() - t0))
                    if r.status_code != 302:
                        return r
                    url = r.headers["location"]
                raise AssertionError(f"redirected forever: {hops}")

            browsing = asyncio.create_task(browse())
            # the hub is holding the browser before its first redirect back: the node catches up meanwhile
            await wait_for(lambda: _at_hub(hops), what=f"the browser sent to the hub: {hops}")
            await bus.routes.put(route_key("alice"), route)
            final = await browsing
            assert final.status_code == 200 and final.json()["user"] == "alice", (hops, final.text)
            assert any("redirects=" in loc for _, loc, _ in hops), hops

            # the route stays away (a node that never catches up): the hub gives up after its limit with an
            # error, having waited longer before each redirect back (0.25 s, then 0.5, 1, 2). The spawner
            # workers stop first (gracefully: servers keep running), or their reconciliation puts it back
            for name, proc in stack.procs:
                if name == "spawner":
                    proc.terminate()
                    proc.wait(15)
            await bus.routes.delete(route_key("alice"))
            await wait_for(lambda: _answers(f"{base}/user/alice/x", 302), what="alice's route gone again")
            hops.clear()
            t0 = time.monotonic()
            r = await browse()
            assert r.status_code == 500 and "Redirect loop detected" in r.text, (hops, r.text)
            # each answer of the hub (a redirect back to /user/…) came that long after the request it answers
            waits = [t - hops[i - 1][2] for i, (status, loc, t) in enumerate(hops)
                     if i and status == 302 and loc.startswith("/user/")]
            assert len(waits) == 4, hops
            assert all(wait >= 0.25 * 2**i for i, wait in enumerate(waits)), (waits, hops)
    finally:
        await bus.close()


async def _at_hub(hops: list[tuple[int, str, float]]) -> bool:
    return any(status == 302 and loc.startswith("/hub/user/alice/") for status, loc, _ in hops)
