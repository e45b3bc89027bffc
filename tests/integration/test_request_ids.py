"""JSON logs carrying one request id from a spawn request to the api's log, the spawner's log and the
`server.ready` event (real processes, real NATS and PostgreSQL)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for
from tests.support.eventlog import EventLog

pytestmark = pytest.mark.integration

REQUEST_ID = "trace-4f1c.spawn_1"


@pytest.fixture
async def cluster(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Cluster]:
    async with running_stack(
        tmp_path, nats_url, database_url, nats_namespace,
        log_level="INFO", log_format="json",
        api={"slow_spawn_timeout": 10},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)]},
        proxy={"port": free_port()},
    ) as c:
        await c.wait_hub()
        yield c


def _records(cluster: Cluster, service: str) -> list[dict[str, Any]]:
    """The JSON records of `service`'s log (lines a user server wrote to the spawner's output are not ours)."""
    text = (cluster.log_dir / f"{service}-0.log").read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_one_request_id_from_the_post_to_server_ready(cluster: Cluster) -> None:
    settings = cluster.settings
    await ensure_user(settings, "admin", admin=True)
    await ensure_user(settings, "alice")
    token = mint_token(settings, "admin")
    events = await EventLog.open(settings.nats_url, settings.nats_namespace)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.proxy.port}", timeout=30,
                                     headers={"Authorization": f"token {token}"}) as client:
            r = await client.post("/hub/api/users/alice/server", headers={"X-Request-Id": REQUEST_ID})
            assert r.status_code in (201, 202), r.text
            assert r.headers["x-request-id"] == REQUEST_ID
            ready = await events.wait("server.ready", user="alice")
    finally:
        await events.close()
    assert ready.request_id == REQUEST_ID

    api = _records(cluster, "api")
    assert api and {"time", "level", "service", "replica", "logger", "message"} <= set(api[0])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", api[0]["time"])
    api_lines = [r for r in api if r.get("request_id") == REQUEST_ID]
    assert any("start of alice/ requested" in r["message"] for r in api_lines), api
    assert all(r["service"] == "api" and r["replica"].startswith("api-") for r in api_lines)

    async def spawner_said_ready() -> list[dict[str, Any]]:
        return [r for r in _records(cluster, "spawner") if r.get("request_id") == REQUEST_ID]

    spawner_lines = await wait_for(spawner_said_ready, timeout=10, what="spawner lines with the request id")
    assert any("ready at" in r["message"] for r in spawner_lines), spawner_lines
    assert all(r["service"] == "spawner" and r["replica"].startswith("spawner-") for r in spawner_lines)
    # the records logged outside a request (start-up, background loops) carry no request id
    assert any("request_id" not in r for r in _records(cluster, "spawner"))


async def test_a_bad_client_request_id_is_replaced_and_every_request_gets_one(cluster: Cluster) -> None:
    base = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        seen = set()
        for bad in ("has spaces", "x" * 65, "semi;colon", ""):
            r = await client.get("/hub/api/", headers={"X-Request-Id": bad})
            assert r.status_code == 200
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers
            seen.add(r.headers["x-request-id"])
        assert len(seen) == 4  # a new one each time
        ok = "a" * 64
        assert (await client.get("/hub/api/", headers={"X-Request-Id": ok})).headers["x-request-id"] == ok
        login = await client.get("/hub/login", headers={"X-Request-Id": "login.1"})  # served by auth
        assert login.status_code == 200 and login.headers["x-request-id"] == "login.1"
        assert re.fullmatch(r"[0-9a-f]{32}", (await client.get("/hub/login")).headers["x-request-id"])
