"""Every service's metrics after a real spawn, `/hub/metrics` behind `read:metrics`, and readiness that goes
false while NATS is stopped and true again once it is back (real processes, NATS and PostgreSQL)."""

from __future__ import annotations

import json
import re
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleethub.shared.bus import Bus
from fleethub.shared.embedded import EmbeddedNats
from fleethub.shared.net import free_port, reserved_free_port
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for
from tests.support.outage import own_nats

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TAG = secrets.token_hex(3)
ADMIN, ALICE, BOB = f"adm{TAG}", f"ali{TAG}", f"bob{TAG}"  # bob's server exits at once: a failed spawn
PASSWORD = "a long enough password 42"
SERVICES = ("auth", "api", "spawner", "proxy", "culler")
XSRF = re.compile(r'name="_xsrf" value="([^"]+)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` whose labels include `labels` (exactly one must match)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples in {labels_of(samples, name)}"
    return found[0]


def labels_of(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls), _ in samples.items() if n == name]


@pytest.fixture
async def hub(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Cluster, EmbeddedNats]]:
    with own_nats(tmp_path / "nats") as nats:
        # below the ephemeral range: auth's own listener (port 0) can not take one before its service binds it
        ops = {name: {"port": reserved_free_port()} for name in SERVICES}
        async with running_stack(
            tmp_path, nats.url, database_url, "met" + TAG, start=SERVICES,
            passwords={ALICE: PASSWORD},
            spawner={"cmd": [sys.executable, str(FAKE_SERVER)],
                     "environment": {"FAKE_PLAN": json.dumps({BOB: {"FAKE_EXIT_CODE": "1"}})}},
            api={"port": free_port()},
            proxy={"port": free_port(), "activity_interval": 0.5},
            culler={"timeout": 3600},
            ops=ops,
        ) as cluster:
            await cluster.wait_hub(timeout=90)
            yield cluster, nats


def ops_url(cluster: Cluster, service: str) -> str:
    return f"http://127.0.0.1:{cluster.settings.ops.of(service).port}"


async def scrape(client: httpx.AsyncClient, cluster: Cluster, service: str) -> Samples:
    r = await client.get(f"{ops_url(cluster, service)}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


async def readiness(client: httpx.AsyncClient, cluster: Cluster, service: str) -> tuple[int, dict[str, Any]]:
    r = await client.get(f"{ops_url(cluster, service)}/health/ready")
    return r.status_code, r.json()


async def test_metrics_after_a_spawn(hub: tuple[Cluster, EmbeddedNats]) -> None:
    cluster, _ = hub
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    await ensure_user(cluster.settings, ADMIN, admin=True)
    token = mint_token(cluster.settings, ADMIN)
    admin = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        # a login through the form (auth's login duration), then a spawn through the REST API
        page = await client.get("/hub/login")
        xsrf = XSRF.search(page.text)
        assert xsrf, page.text
        r = await client.post("/hub/login", data={"username": ALICE, "password": PASSWORD, "_xsrf": xsrf.group(1)})
        assert r.status_code in (302, 303), r.text
        r = await client.post(f"/hub/api/users/{ALICE}/server", headers=admin)
        assert r.status_code in (201, 202), r.text

        async def ready() -> bool:
            r = await client.get(f"/hub/api/users/{ALICE}", headers=admin)
            server = r.json()["servers"].get("")
            return bool(server and server["ready"])

        await wait_for(ready, timeout=60, what="alice's server ready")
        assert (await client.get(f"/user/{ALICE}/x")).status_code == 200

        # /hub/metrics: 403 (JSON) without a token, and for a token without read:metrics
        r = await client.get("/hub/metrics")
        assert r.status_code == 403 and r.json()["message"], r.text
        r = await client.post(f"/hub/api/users/{ADMIN}/tokens", headers=admin, json={"scopes": ["read:users"]})
        assert r.status_code == 201, r.text
        r = await client.get("/hub/metrics", headers={"Authorization": f"token {r.json()['token']}"})
        assert r.status_code == 403, r.text
        assert r.json() == {"status": 403, "message": r.json()["message"]} and "read:metrics" in r.json()["message"]
        # … and answers a token with only read:metrics
        r = await client.post(f"/hub/api/users/{ADMIN}/tokens", headers=admin, json={"scopes": ["read:metrics"]})
        assert r.status_code == 201, r.text
        reader = {"Authorization": f"token {r.json()['token']}"}
        r = await client.get("/hub/metrics", headers=reader)
        assert r.status_code == 200, r.text
        api = parse(r.text)
        assert value(api, "jupyterhub_running_servers") == 1
        assert value(api, "jupyterhub_total_users") == 2  # the admin and alice
        assert {labels["period"] for labels in labels_of(api, "jupyterhub_active_users")} == {"24h", "7d", "30d"}

        async def alice_active() -> bool:  # her request to her server, once the proxy's activity batch is recorded
            users = (await client.get("/hub/api/users", headers=admin)).json()
            active = {u["name"] for u in users if u["last_activity"]}  # the admin's token use counts too
            r = await client.get("/hub/metrics", headers=reader)
            return ALICE in active and value(parse(r.text), "jupyterhub_active_users", period="30d") == len(active)

        await wait_for(alice_active, timeout=30, what="alice counted active")
        assert value(api, "fleethub_outbox_lag_seconds") >= 0
        assert value(api, "fleethub_dead_letters") == 0
        spawned = value(api, "jupyterhub_request_duration_seconds_count", method="POST",
                        handler="/hub/api/users/{name}/server")
        assert spawned == 1
        assert "jupyterhub_server_spawn_duration_seconds_count" not in {n for n, _ in api}  # the spawner's, not api's

        # the api's ops listener serves the same registry (no token: it is an operator's port)
        assert value(await scrape(client, cluster, "api"), "jupyterhub_running_servers") == 1

        spawner = await scrape(client, cluster, "spawner")
        assert value(spawner, "jupyterhub_server_spawn_duration_seconds_count", status="success") == 1
        assert labels_of(spawner, "jupyterhub_server_spawn_duration_seconds_count") == [{"status": "success"}]
        assert value(spawner, "jupyterhub_proxy_add_duration_seconds_count", status="success") >= 1
        assert value(spawner, "fleethub_command_queue_depth", consumer="spawner-local") == 0
        assert value(spawner, "fleethub_command_redelivered", consumer="spawner-local") == 0
        nodes = labels_of(spawner, "fleethub_route_propagation_seconds_count")
        assert len(nodes) == 1 and nodes[0]["node"].startswith("proxy-"), nodes

        # a malformed command: the worker gives up on it at once, and the api counts the dead letter
        bus = Bus(cluster.settings.nats_url, cluster.settings.nats_namespace, "test-metrics")
        await bus.connect()
        try:
            await bus.publish_raw(f"{cluster.settings.nats_namespace}.cmd.local.spawn.{ALICE}._", b"not json",
                                  f"bad-{TAG}")
        finally:
            await bus.close()

        async def dead_letter_counted() -> bool:
            r = await client.get("/hub/metrics", headers=reader)
            return value(parse(r.text), "fleethub_dead_letters") == 1

        await wait_for(dead_letter_counted, timeout=30, what="the dead letter counted")
        spawner = await scrape(client, cluster, "spawner")
        assert value(spawner, "fleethub_command_queue_depth", consumer="spawner-local") == 0
        assert value(spawner, "fleethub_command_in_flight", consumer="spawner-local") == 0

        proxy = await scrape(client, cluster, "proxy")
        node = nodes[0]["node"]
        assert value(proxy, "fleethub_proxy_requests_total", node=node) >= 5
        assert value(proxy, "fleethub_proxy_bytes_total", node=node, direction="out") > 0
        assert value(proxy, "fleethub_proxy_bytes_total", node=node, direction="in") > 0

        auth = await scrape(client, cluster, "auth")
        assert value(auth, "jupyterhub_login_duration_seconds_count", status="success") == 1
        assert value(auth, "jupyterhub_request_duration_seconds_count", method="POST", handler="/hub/login",
                     code="302") == 1

        # a failed spawn and a stop
        await ensure_user(cluster.settings, BOB)
        r = await client.post(f"/hub/api/users/{BOB}/server", headers=admin)
        assert r.status_code in (201, 202, 500), r.text

        async def failure_observed() -> bool:
            samples = await scrape(client, cluster, "spawner")
            return ("jupyterhub_server_spawn_duration_seconds_count", frozenset({("status", "failure")})) in samples

        await wait_for(failure_observed, timeout=60, what="bob's failed spawn observed")
        r = await client.delete(f"/hub/api/users/{ALICE}/server", headers=admin)
        assert r.status_code in (202, 204), r.text

        async def stop_observed() -> bool:
            samples = await scrape(client, cluster, "spawner")
            return ("jupyterhub_server_stop_seconds_count", frozenset({("status", "success")})) in samples

        await wait_for(stop_observed, timeout=60, what="alice's stop observed")
        spawner = await scrape(client, cluster, "spawner")
        assert value(spawner, "jupyterhub_server_spawn_duration_seconds_count", status="failure") == 1
        assert value(spawner, "jupyterhub_server_spawn_duration_seconds_count", status="success") == 1
        assert value(spawner, "jupyterhub_server_stop_seconds_count", status="success") == 1
        assert value(spawner, "jupyterhub_proxy_delete_duration_seconds_count", status="success") >= 1

        async def none_running() -> bool:
            r = await client.get("/hub/metrics", headers=reader)
            return value(parse(r.text), "jupyterhub_running_servers") == 0

        await wait_for(none_running, timeout=30, what="no server running")

        culler = await scrape(client, cluster, "culler")
        assert ("jupyterhub_event_loop_interval_seconds_count", frozenset()) in culler

        for service in SERVICES:
            status, body = await readiness(client, cluster, service)
            assert status == 200 and body["status"] == "ready", (service, body)
        _, body = await readiness(client, cluster, "spawner")
        assert body["checks"] == {"database": "ok", "bus": "ok", "consumer:spawner-local": "ok"}
        _, body = await readiness(client, cluster, "proxy")
        assert body["checks"] == {"bus": "ok", "route_table": "ok"}
        r = await client.get(f"{ops_url(cluster, 'spawner')}/nothing")
        assert r.status_code == 404 and "/health/ready" in r.json()["message"]
        r = await client.post(f"{ops_url(cluster, 'spawner')}/metrics")
        assert r.status_code == 405


async def test_readiness_follows_nats(hub: tuple[Cluster, EmbeddedNats]) -> None:
    cluster, nats = hub
    async with httpx.AsyncClient(timeout=10) as client:
        for service in SERVICES:
            await wait_for(lambda s=service: _ready_is(client, cluster, s, True), timeout=30, what=f"{service} ready")
        nats.stop()
        try:
            for service in SERVICES:
                await wait_for(lambda s=service: _ready_is(client, cluster, s, False), timeout=30,
                               what=f"{service} not ready while NATS is stopped\n{cluster.logs()}")
                status, body = await readiness(client, cluster, service)
                assert status == 503 and "bus" in body["missing"] and "NATS" in body["message"], (service, body)
                live = await client.get(f"{ops_url(cluster, service)}/health/live")
                assert live.status_code == 200 and live.json() == {"status": "ok"}
            # the api's own listener: its probes, and /hub/health still 200 with the degraded details
            api = f"http://127.0.0.1:{cluster.settings.api.port}"
            assert (await client.get(f"{api}/health/ready")).status_code == 503
            assert (await client.get(f"{api}/health/live")).status_code == 200
            r = await client.get(f"{api}/hub/health")
            assert r.status_code == 200, r.text
            health = r.json()
            assert health["status"] == "degraded" and health["bus"] == "unavailable" and health["database"] == "ok"
            assert set(health["consumers"]) == {"api-activity", "api-server-events"}
        finally:
            nats.start()
        for service in SERVICES:
            await wait_for(lambda s=service: _ready_is(client, cluster, s, True), timeout=60,
                           what=f"{service} ready again after NATS came back\n{cluster.logs()}")
        r = await client.get(f"http://127.0.0.1:{cluster.settings.api.port}/hub/health")
        assert r.json() == {"status": "ok", "database": "ok", "bus": "ok",
                            "consumers": {"api-activity": "bound", "api-server-events": "bound"}}


async def _ready_is(client: httpx.AsyncClient, cluster: Cluster, service: str, wanted: bool) -> bool:
    status, _ = await readiness(client, cluster, service)
    return (status == 200) is wanted
