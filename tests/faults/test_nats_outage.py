"""F12: NATS (a server of the test's own) down for longer than nats-py's default reconnect budget would last
at our reconnect wait: every service keeps retrying and none exits, health says the bus is away, a request
that needs the bus now answers 503 with a JSON message, a start or stop answers 202 at once and takes effect
when the bus returns, running servers keep serving through both proxies, and everything converges after."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.embedded import EmbeddedNats
from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, mint_token, running_stack, wait_for
from tests.support.outage import Recorder, own_nats, user_server_pids

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

TAG = secrets.token_hex(3)
ADMIN = f"adm{TAG}"
KEPT, STARTED, STOPPED = f"k{TAG}", f"b{TAG}", f"d{TAG}"  # runs throughout; started and stopped while NATS is away
# nats-py gives up after 60 attempts by default; at our reconnect wait (0.5 s) against a refusing port that is
# about 30 s: an outage longer than that shows the budget is unlimited
OUTAGE = 35.0
SLOW_SPAWN = 60.0  # longer than the client's timeout: a 202 at all shows the api did not wait for an outcome


@pytest.fixture
async def stack(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Cluster, EmbeddedNats, int]]:
    with own_nats(tmp_path / "nats") as nats:
        second_port = free_port()
        async with running_stack(
            tmp_path, nats.url, database_url, "f12" + TAG,
            start=("auth", "api", "spawner", "proxy", "culler"),
            api={"slow_spawn_timeout": SLOW_SPAWN, "slow_stop_timeout": SLOW_SPAWN},
            spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
            proxy={"port": free_port()},
            culler={"timeout": 3600},
        ) as cluster:
            cluster.start("proxy", proxy={"port": second_port})
            await cluster.wait_hub(timeout=60)
            yield cluster, nats, second_port


class _NoAnswer(httpx.HTTPError):
    """Not a 200 (a proxy with no api replica registered yet answers 503): `wait_for` tries again."""


async def _server(api: httpx.AsyncClient, user: str) -> dict[str, object] | None:
    r = await api.get(f"/hub/api/users/{user}")
    if r.status_code != 200:
        raise _NoAnswer(f"{r.status_code}: {r.text}")
    servers: dict[str, dict[str, object]] = r.json()["servers"]
    return servers.get("")


async def _ready(api: httpx.AsyncClient, user: str) -> bool:
    server = await _server(api, user)
    return bool(server and server.get("ready") and server.get("pending") is None)


async def _reachable(client: httpx.AsyncClient, base: str, user: str) -> bool:
    r = await client.get(f"{base}/user/{user}/x")
    return r.status_code == 200 and r.json()["user"] == user


async def test_nats_outage(stack: tuple[Cluster, EmbeddedNats, int]) -> None:
    cluster, nats, second_port = stack
    hub = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    hub2 = f"http://127.0.0.1:{second_port}"
    from tests.support.cluster import ensure_user

    await ensure_user(cluster.settings, ADMIN, admin=True)
    token = mint_token(cluster.settings, ADMIN)
    # the client gives up well before SLOW_SPAWN: an answer shows the api did not wait for the outcome
    api = httpx.AsyncClient(base_url=hub, headers={"Authorization": f"token {token}"}, timeout=15)
    async with api:
        assert (await api.post("/hub/api/users", json={"usernames": [KEPT, STARTED, STOPPED]})).status_code == 201
        for user in (KEPT, STOPPED):
            assert (await api.post(f"/hub/api/users/{user}/server")).status_code in (201, 202)
            await wait_for(lambda u=user: _ready(api, u), timeout=60, what=f"{user}'s server ready")
            for base in (hub, hub2):
                await wait_for(lambda u=user, b=base: _reachable(api, b, u), timeout=30, what=f"{user} via {base}")

        await asyncio.to_thread(nats.stop)
        stopped_at = time.monotonic()

        async def bus_down() -> bool:
            health = (await api.get("/hub/health")).json()
            # its consumers may show unbound too (a fetch failed and they re-bind): the message names them after
            return bool(health["status"] == "degraded" and health["database"] == "ok"
                        and health["bus"] == "unavailable"
                        and health["message"].startswith("the message bus (NATS) is unavailable"))

        await wait_for(bus_down, timeout=30, what="health to report the bus unavailable")
        recorder = Recorder()
        loops = [
            recorder.loop("running server via proxy 1", lambda: api.get(f"{hub}/user/{KEPT}/x"), pause=0.2),
            recorder.loop("running server via proxy 2", lambda: api.get(f"{hub2}/user/{KEPT}/x"), pause=0.2),
            recorder.loop("GET users", lambda: api.get("/hub/api/users"), pause=0.2),
            recorder.loop("GET proxy table (needs the bus)", lambda: api.get("/hub/api/proxy"), pause=0.5),
            recorder.loop("POST proxy resync (needs the bus)", lambda: api.post("/hub/api/proxy"), pause=0.5),
        ]
        traffic = [asyncio.ensure_future(loop) for loop in loops]
        try:
            sent = time.monotonic()
            start = recorder.note("start while NATS is away", await api.post(f"/hub/api/users/{STARTED}/server"))
            stop = recorder.note("stop while NATS is away", await api.delete(f"/hub/api/users/{STOPPED}/server"))
            print(f"\nstart and stop answered in {time.monotonic() - sent:.3f} s while NATS was away")
            assert start.status_code == 202 and stop.status_code == 202, (start.text, stop.text)
            # the desired states are recorded at once (the commands wait in the outbox)
            assert (await _server(api, STARTED) or {}).get("pending") == "spawn"
            assert (await _server(api, STOPPED) or {}).get("pending") == "stop"
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped_at)))  # the outage itself
            health = (await api.get("/hub/health")).json()
            assert health["bus"] == "unavailable", health
        finally:
            recorder.stop.set()
            await asyncio.gather(*traffic, return_exceptions=True)
        await asyncio.to_thread(nats.start)
        print(f"\nanswers while NATS was away for {time.monotonic() - stopped_at:.0f} s: {recorder.statuses()}")

        # no service process gave up on the bus (nor exited): they all reconnect
        assert all(proc.poll() is None for _, proc in cluster.procs), cluster.logs()
        statuses = recorder.statuses()
        for via in ("running server via proxy 1", "running server via proxy 2"):
            assert set(statuses[via]) == {200}, statuses
        assert set(statuses["GET users"]) == {200}, statuses
        for needs_bus in ("GET proxy table (needs the bus)", "POST proxy resync (needs the bus)"):
            assert set(statuses[needs_bus]) == {503}, statuses
        assert not recorder.server_errors(), recorder.server_errors()[:5]
        assert not recorder.unclear_503s("bus"), recorder.unclear_503s("bus")[:5]
        assert all(a.content_type == "application/json" for a in recorder.answers if a.status == 503)
        assert not recorder.errors, recorder.errors[:5]

        # after: health ok, the start and the stop took effect, the table is served again, through both proxies
        await wait_for(lambda: _health_ok(api), timeout=60, what="health ok after NATS returned")
        await wait_for(lambda: _ready(api, STARTED), timeout=60, what="the start made while NATS was away")
        await wait_for(lambda: _gone(api, STOPPED), timeout=60, what="the stop made while NATS was away")
        for base in (hub, hub2):
            for user in (KEPT, STARTED):
                await wait_for(lambda u=user, b=base: _reachable(api, b, u), timeout=30, what=f"{user} via {base}")
        table = await api.get("/hub/api/proxy")
        assert table.status_code == 200 and f"/user/{STOPPED}/" not in table.json(), table.text
        pids = user_server_pids()
        assert len(pids.get(f"/user/{KEPT}/", [])) == 1 and len(pids.get(f"/user/{STARTED}/", [])) == 1, pids
        await wait_for(lambda: _no_process(STOPPED), timeout=30, what=f"{STOPPED}'s server process gone")


async def _health_ok(api: httpx.AsyncClient) -> bool:
    r = await api.get("/hub/health")
    return r.status_code == 200 and r.json()["status"] == "ok"


async def _gone(api: httpx.AsyncClient, user: str) -> bool:
    return await _server(api, user) is None


async def _no_process(user: str) -> bool:
    return not user_server_pids().get(f"/user/{user}/")
