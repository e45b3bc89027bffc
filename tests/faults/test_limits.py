"""F23: the hub-wide spawn limits hold across api replicas. Fifty starts at once, spread over three api
replicas, with `concurrent_spawn_limit=5` (or `active_server_limit=5`): exactly five are accepted and forty-five
answered 429 with `Retry-After` and a JSON message; the count is PostgreSQL's, not a replica's; once there is
room again, a retry is accepted."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

LIMIT = 5
CROWD = 50
REPLICAS = 3


@pytest.fixture(params=["concurrent_spawn_limit", "active_server_limit"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path, nats_url: str, database_url: str,
                nats_namespace: str) -> AsyncIterator[tuple[Cluster, list[str], str]]:
    limit: str = request.param
    # a pending spawn stays pending while the crowd arrives (the concurrent limit counts pending spawns);
    # for the active limit, servers start at once and stay running
    delay = "20" if limit == "concurrent_spawn_limit" else "0"
    limits = {"concurrent_spawn_limit": 0, "active_server_limit": 0, limit: LIMIT}
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace, start=("auth", "spawner", "proxy"),
        api={"slow_spawn_timeout": 0.5, "slow_stop_timeout": 5, **limits},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "environment": {"FAKE_START_DELAY": delay}},
        proxy={"port": free_port()},
    ) as cluster:
        ports = [free_port() for _ in range(REPLICAS)]
        for port in ports:
            cluster.start("api", api={"port": port})
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        async with httpx.AsyncClient(timeout=10) as anon:
            for url in urls:
                await wait_for(lambda u=url: _answers(anon, u), timeout=60, what=f"api replica {url}")
        yield cluster, urls, limit


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    return (await client.get(f"{url}/hub/api/")).status_code == 200


async def test_limit_holds_across_replicas(stack: tuple[Cluster, list[str], str]) -> None:
    cluster, urls, limit = stack
    tag = secrets.token_hex(3)
    users = [f"l{tag}{i}" for i in range(CROWD)]
    admin = f"adm{tag}"
    await ensure_user(cluster.settings, admin, admin=True)
    token = mint_token(cluster.settings, admin)
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as api:
        r = await api.post(f"{urls[0]}/hub/api/users", json={"usernames": users})
        assert r.status_code == 201, r.text
        # every replica takes a third of the crowd, all at once
        answers = await asyncio.gather(*(api.post(f"{urls[i % REPLICAS]}/hub/api/users/{user}/server")
                                         for i, user in enumerate(users)))
        by_status: dict[int, list[str]] = {}
        for user, answer in zip(users, answers, strict=True):
            by_status.setdefault(answer.status_code, []).append(user)
        print(f"\n{limit}={LIMIT}, {CROWD} starts over {REPLICAS} replicas: "
              f"{ {status: len(names) for status, names in by_status.items()} }")
        refused = [a for a in answers if a.status_code == 429]
        accepted = [u for u, a in zip(users, answers, strict=True) if a.status_code in (201, 202)]
        assert len(accepted) == LIMIT and len(refused) == CROWD - LIMIT, {s: len(n) for s, n in by_status.items()}
        for answer in refused:
            assert int(answer.headers["retry-after"]) > 0
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["status"] == 429 and answer.json()["message"], answer.text
        # the refused did not start anything
        for user in by_status[429][:5]:
            model = (await api.get(f"{urls[1]}/hub/api/users/{user}")).json()
            assert "" not in model["servers"], model

        retry = by_status[429][0]
        if limit == "concurrent_spawn_limit":
            # while the five are pending, a retry is still refused; once they are ready, it is accepted
            assert (await api.post(f"{urls[2]}/hub/api/users/{retry}/server")).status_code == 429
            for user in accepted:
                await wait_for(lambda u=user: _ready(api, urls[0], u), timeout=90, what=f"{user}'s server ready")
        else:
            # the five run; a retry is refused until one of them stops
            for user in accepted:
                await wait_for(lambda u=user: _ready(api, urls[0], u), timeout=90, what=f"{user}'s server ready")
            assert (await api.post(f"{urls[2]}/hub/api/users/{retry}/server")).status_code == 429
            assert (await api.delete(f"{urls[1]}/hub/api/users/{accepted[0]}/server")).status_code in (202, 204)
            await wait_for(lambda: _gone(api, urls[0], accepted[0]), timeout=60, what="a server to stop")
        again = await api.post(f"{urls[2]}/hub/api/users/{retry}/server")
        assert again.status_code in (201, 202), again.text


async def _ready(api: httpx.AsyncClient, url: str, user: str) -> bool:
    server = (await api.get(f"{url}/hub/api/users/{user}")).json()["servers"].get("")
    return bool(server and server["ready"])


async def _gone(api: httpx.AsyncClient, url: str, user: str) -> bool:
    return "" not in (await api.get(f"{url}/hub/api/users/{user}")).json()["servers"]
