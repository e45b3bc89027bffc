"""F13: PostgreSQL restarted under traffic (spawns, stops, logins, reads, pages): every answer while it is
away is a 503 with `Retry-After` and a message naming the database, never a 500; the services' pools recover
without a restart of their own; sessions and tokens still work; no half-written row; no orphan server."""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from fleethub.shared.db.engine import make_engine
from fleethub.shared.embedded import EmbeddedPostgres
from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, mint_token, running_stack, wait_for
from tests.support.outage import Recorder, asyncpg_url, own_postgres, user_server_pids

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

PASSWORD = "f13-password-123"
TAG = secrets.token_hex(3)  # user names no other test on this machine uses (user servers are found by prefix)
ADMIN = f"adm{TAG}"
SPAWNERS = [f"s{TAG}{i}" for i in range(4)]  # spawns in flight when PostgreSQL goes
STOPPERS = [f"t{TAG}{i}" for i in range(2)]  # servers stopped while it is away
CHURN = f"c{TAG}"  # started and stopped again and again by a loop


@pytest.fixture
async def stack(tmp_path: Path, nats_url: str, nats_namespace: str) -> AsyncIterator[tuple[Cluster, EmbeddedPostgres]]:
    with own_postgres() as pg:
        async with running_stack(
            tmp_path, nats_url, asyncpg_url(pg), nats_namespace,
            start=("auth", "api", "spawner", "proxy", "culler"),
            passwords={ADMIN: PASSWORD},
            auth={"authenticator": "password", "admin_users": [ADMIN]},
            api={"slow_spawn_timeout": 1, "slow_stop_timeout": 1},
            spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "environment": {"FAKE_START_DELAY": "1.5"},
                     "lease_ttl": 2},
            proxy={"port": free_port()},
            culler={"timeout": 3600},
        ) as cluster:
            await cluster.wait_hub(timeout=60)
            yield cluster, pg


async def _login(browser: httpx.AsyncClient) -> httpx.Response:
    page = await browser.get("/hub/login")
    if page.status_code != 200:
        return page
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert xsrf, page.text
    return await browser.post("/hub/login", data={"username": ADMIN, "password": PASSWORD, "_xsrf": xsrf.group(1)})


async def _server(api: httpx.AsyncClient, user: str) -> dict[str, object] | None:
    r = await api.get(f"/hub/api/users/{user}")
    assert r.status_code == 200, r.text
    servers: dict[str, dict[str, object]] = r.json()["servers"]
    return servers.get("")


@pytest.mark.parametrize("in_flight", [False, True], ids=["requests", "spawns-in-flight"])
async def test_postgres_restart_mid_spawn_stop_login(stack: tuple[Cluster, EmbeddedPostgres], in_flight: bool) -> None:
    """`requests`: the hub's answers while PostgreSQL restarts, with writes that start nothing new (a start
    of a running server, a stop of a stopped one). `spawns-in-flight`: also starts and stops committed just
    before it goes, and a loop starting and stopping a server throughout; they must all end as asked."""
    cluster, pg = stack
    hub = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    token = mint_token(cluster.settings, ADMIN)
    api = httpx.AsyncClient(base_url=hub, headers={"Authorization": f"token {token}"}, timeout=30)
    browser = httpx.AsyncClient(base_url=hub, headers={"Accept": "text/html"}, timeout=30)
    async with api, browser:
        assert (await api.post("/hub/api/users", json={"usernames": [*SPAWNERS, *STOPPERS, CHURN]})).status_code == 201
        ok = await _login(browser)
        assert ok.status_code in (302, 303), ok.text
        session_cookie = browser.cookies.get("jupyterhub-hub-login")
        assert session_cookie
        for user in STOPPERS:
            assert (await api.post(f"/hub/api/users/{user}/server")).status_code in (201, 202)
        for user in STOPPERS:
            await wait_for(lambda u=user: _ready(api, u), timeout=60, what=f"{user}'s server ready")

        recorder = Recorder()
        # a fresh client per login loop: each login starts from no cookie
        login_client = httpx.AsyncClient(base_url=hub, headers={"Accept": "text/html"}, timeout=30)

        async def churn() -> httpx.Response:
            if not in_flight:  # writes that find nothing to do: 400 (running already) and 204 (stopped already)
                r = await api.post(f"/hub/api/users/{STOPPERS[0]}/server")
                return r if r.status_code != 400 else await api.delete(f"/hub/api/users/{CHURN}/server")
            r = await api.post(f"/hub/api/users/{CHURN}/server")
            if r.status_code == 400:  # running or pending: stop it instead
                return await api.delete(f"/hub/api/users/{CHURN}/server")
            return r

        loops = [
            recorder.loop("GET user (fast read)", lambda: api.get(f"/hub/api/users/{ADMIN}")),
            recorder.loop("GET users", lambda: api.get("/hub/api/users")),
            recorder.loop("GET /user (token)", lambda: api.get("/hub/api/user")),
            recorder.loop("POST/DELETE churn", churn, pause=0.2),
            recorder.loop("login form", lambda: _login(login_client), pause=0.2),
            recorder.loop("GET home (page)", lambda: browser.get("/hub/home")),
            recorder.loop("GET health", lambda: api.get("/hub/health"), pause=0.2),
        ]
        traffic = [asyncio.ensure_future(loop) for loop in loops]
        try:
            # spawns in flight (the fake server takes 1.5 s to listen) and stops, then PostgreSQL goes
            in_flight_answers: asyncio.Future[list[httpx.Response]] | None = None
            if in_flight:
                sent = [api.post(f"/hub/api/users/{user}/server") for user in SPAWNERS]
                sent += [api.delete(f"/hub/api/users/{user}/server") for user in STOPPERS]
                in_flight_answers = asyncio.gather(*sent)

                async def committed() -> bool:  # the starts and stops are recorded; the spawner is at work
                    servers = [await _server(api, u) for u in [*SPAWNERS, *STOPPERS]]
                    return all(s is None or s.get("pending") or s.get("ready") for s in servers[len(SPAWNERS):]) \
                        and all(s is not None and s.get("pending") == "spawn" for s in servers[:len(SPAWNERS)])

                await wait_for(committed, timeout=30, what="the starts and stops recorded")
            await asyncio.to_thread(pg.stop)
            answered = [] if in_flight_answers is None else await in_flight_answers
            for r in answered:
                recorder.note(f"{r.request.method} spawn/stop in flight", r)
            down_at = len(recorder.answers)

            async def seen_503s() -> bool:  # every kind of request has met the outage
                met = {a.what for a in recorder.answers[down_at:] if a.status == 503}
                return {"GET users", "GET /user (token)", "login form", "GET home (page)"} <= met

            await wait_for(seen_503s, timeout=60, what=f"503s while PostgreSQL is down: {recorder.statuses()}")
            health = (await api.get("/hub/health")).json()
            assert health["status"] == "degraded" and health["database"] == "unavailable", health
            await asyncio.to_thread(pg.start)
            up_at = len(recorder.answers)

            async def recovered() -> bool:  # every kind of request answered without 503 since
                tail = recorder.answers[up_at:]
                good = {a.what for a in tail if a.status < 500}
                return {"GET users", "GET /user (token)", "login form", "GET home (page)", "GET health"} <= good
            await wait_for(recovered, timeout=60, what=f"recovery after PostgreSQL's restart: {recorder.statuses()}")
        finally:
            recorder.stop.set()
            await asyncio.gather(*traffic, return_exceptions=True)
            await login_client.aclose()
        print(f"\nanswers by kind and status: {recorder.statuses()}")

        # never a 500; each 503 says what is away, with Retry-After, and no traceback
        assert not recorder.server_errors(), (recorder.server_errors()[:5], cluster.logs())
        assert not recorder.unclear_503s("database"), recorder.unclear_503s("database")[:5]
        assert not recorder.errors, recorder.errors[:5]
        for a in recorder.answers:
            if a.status == 503 and a.what not in ("login form", "GET home (page)"):
                assert a.content_type == "application/json", a

        # every service process is the one started (no restart), and each answers or works again
        assert all(proc.poll() is None for _, proc in cluster.procs), cluster.logs()
        # the session cookie and the token from before the restart still work
        assert (await browser.get("/hub/home")).status_code == 200
        assert (await api.get("/hub/api/user")).json()["name"] == ADMIN
        health = (await api.get("/hub/health")).json()
        assert health == {"status": "ok", "database": "ok", "bus": "ok",
                          "consumers": {"api-activity": "bound", "api-server-events": "bound"}}, health

        # a client sends again what was answered 503 (the same request: a start or stop is idempotent)
        for r in answered:
            if r.status_code == 503:
                again = await api.request(r.request.method, r.request.url)
                assert again.status_code in (201, 202, 204), again.text
        if in_flight:
            await _in_flight_end_as_asked(api)
        await _no_half_written_rows(cluster)
        await wait_for(lambda: _no_orphans(api), timeout=60, what="one process per running server, none other")


async def _in_flight_end_as_asked(api: httpx.AsyncClient) -> None:
    """The spawns in flight and the stops end (pending ends; the stopped servers are gone); every spawning
    user's server is then ready (after a new start if the spawn failed) and reachable."""
    for user in SPAWNERS:
        await wait_for(lambda u=user: _settled(api, u), timeout=60, what=f"{user}'s spawn to settle")
    for user in STOPPERS:
        await wait_for(lambda u=user: _gone(api, u), timeout=60, what=f"{user}'s server stopped")
    outcomes = {u: await _server(api, u) for u in SPAWNERS}
    print(f"spawns in flight across the restart: { {u: bool(s and s.get('ready')) for u, s in outcomes.items()} }")
    # the spawner and proxy serve new work: every spawner's user can (re)start and is reachable
    for user in SPAWNERS:
        if not (outcomes[user] or {}).get("ready"):
            r = await api.post(f"/hub/api/users/{user}/server")
            assert r.status_code in (201, 202), r.text
        await wait_for(lambda u=user: _ready(api, u), timeout=60, what=f"{user}'s server ready again")
        # through the proxy (wait: "ready means reachable" is not this test's subject)
        await wait_for(lambda u=user: _reachable(api, u), timeout=30, what=f"{user}'s server through the proxy")


async def _ready(api: httpx.AsyncClient, user: str) -> bool:
    server = await _server(api, user)
    return bool(server and server.get("ready") and server.get("pending") is None)


async def _reachable(api: httpx.AsyncClient, user: str) -> bool:
    r = await api.get(f"/user/{user}/x")
    return r.status_code == 200 and r.json()["user"] == user


async def _settled(api: httpx.AsyncClient, user: str) -> bool:
    server = await _server(api, user)
    return server is None or server.get("pending") is None


async def _gone(api: httpx.AsyncClient, user: str) -> bool:
    return await _server(api, user) is None


async def _no_orphans(api: httpx.AsyncClient) -> bool:
    """Each of our users has exactly one server process if the API says it runs, none otherwise."""
    pids = user_server_pids()
    for user in [*SPAWNERS, *STOPPERS, CHURN]:
        server = await _server(api, user)
        running = bool(server and server.get("ready"))
        if len(pids.get(f"/user/{user}/", [])) != (1 if running else 0):
            return False
    return True


async def _no_half_written_rows(cluster: Cluster) -> None:
    """A start writes desired state, spawn id, the server's token and the command in one transaction: no
    server wanted running lacks its token or its command."""
    engine = make_engine(cluster.settings.require_database_url(), pool_size=1)
    try:
        async with engine.connect() as conn:
            lacking = (await conn.execute(text(
                "SELECT s.spawn_id FROM servers s WHERE s.desired = 'running' AND ("
                " NOT EXISTS (SELECT 1 FROM api_tokens t WHERE t.spawn_id = s.spawn_id AND t.kind = 'server')"
                " OR NOT EXISTS (SELECT 1 FROM outbox o WHERE o.payload LIKE '%' || s.spawn_id || '%'))"
            ))).all()
            unpublished = (await conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar()
    finally:
        await engine.dispose()
    assert not lacking, lacking
    assert unpublished == 0
