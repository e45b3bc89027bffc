"""Metrics per service runtime (own registry, own groups) and the readiness report."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleethub.shared.metrics import Metrics
from fleethub.shared.ops import Readiness, answer


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


async def test_each_runtime_has_its_own_registry() -> None:
    # two services in one interpreter (`fleethub up` may host several): neither sees the other's values
    one, two = Metrics("spawner"), Metrics("spawner")
    one.spawn_duration.labels(status="success").observe(1.5)
    first, second = _samples(await one.exposition()), _samples(await two.exposition())
    key = ("jupyterhub_server_spawn_duration_seconds_count", (("status", "success"),))
    assert first[key] == 1
    assert key not in second


async def test_a_service_exports_only_its_groups() -> None:
    api = {name for name, _ in _samples(await Metrics("api").exposition())}
    spawner = await Metrics("spawner").exposition()
    assert "jupyterhub_total_users" in api and "jupyterhub_event_loop_interval_seconds_count" in api
    assert b"jupyterhub_total_users" not in spawner
    assert b"jupyterhub_server_spawn_duration_seconds" in spawner
    culler = Metrics("culler")
    culler.total_users.set(5)  # observing what a service does not export is harmless, and not exported
    assert b"jupyterhub_total_users" not in await culler.exposition()


async def test_timed_labels_success_and_failure() -> None:
    metrics = Metrics("spawner")
    with metrics.timed(metrics.proxy_add):
        pass
    with pytest.raises(RuntimeError), metrics.timed(metrics.proxy_add):
        raise RuntimeError("NATS away")
    samples = _samples(await metrics.exposition())
    assert samples[("jupyterhub_proxy_add_duration_seconds_count", (("status", "success"),))] == 1
    assert samples[("jupyterhub_proxy_add_duration_seconds_count", (("status", "failure"),))] == 1


async def test_a_failing_refresher_leaves_the_rest() -> None:
    metrics = Metrics("api")

    async def broken() -> None:
        raise ConnectionError("PostgreSQL away")

    async def users() -> None:
        metrics.total_users.set(7)

    metrics.refreshers += [broken, users]
    assert _samples(await metrics.exposition())[("jupyterhub_total_users", ())] == 7


async def test_proxy_counters_are_read_at_scrape_time() -> None:
    metrics = Metrics("proxy")
    counts = [3, 100, 2000]
    assert metrics.proxy_collector is not None
    metrics.proxy_collector.read = lambda: ("proxy-a", counts[0], counts[1], counts[2])
    counts[0] = 4
    samples = _samples(await metrics.exposition())
    assert samples[("fleethub_proxy_requests_total", (("node", "proxy-a"),))] == 4
    assert samples[("fleethub_proxy_bytes_total", (("direction", "out"), ("node", "proxy-a")))] == 2000


async def test_readiness_names_what_is_missing() -> None:
    bound, unbound = asyncio.Event(), asyncio.Event()
    bound.set()
    readiness = Readiness({"spawner-local": bound, "spawner-docker": unbound})

    async def yes() -> bool:
        return True

    async def hangs() -> bool:
        await asyncio.sleep(3600)
        return True

    readiness.add("database", yes)
    readiness.add("bus", hangs)  # a check that does not answer in time counts as missing
    ok, body = await readiness.report()
    assert not ok
    assert body["missing"] == ["bus", "consumer:spawner-docker"]
    assert "NATS" in body["message"] and "spawner-docker" in body["message"]
    assert body["checks"]["consumer:spawner-local"] == "ok"
    unbound.set()
    readiness.checks["bus"] = yes
    ok, body = await readiness.report()
    assert ok and body["status"] == "ready"


async def test_ops_paths() -> None:
    metrics, readiness = Metrics("culler"), Readiness()
    ready = asyncio.Event()
    readiness.add_event("route_table", ready)
    status, _, body = await answer("/health/ready", metrics, readiness)
    assert status == 503 and json.loads(body)["missing"] == ["route_table"]
    ready.set()
    assert (await answer("/health/ready", metrics, readiness))[0] == 200
    assert (await answer("/health/live", metrics, readiness))[:2] == (200, "application/json")
    status, ctype, body = await answer("/metrics", metrics, readiness)
    assert status == 200 and ctype.startswith("text/plain") and b"jupyterhub_event_loop_interval_seconds" in body
    status, _, body = await answer("/admin", metrics, readiness)
    assert status == 404 and "/health/ready" in json.loads(body)["message"]
