"""A node's watches in-process against real NATS: the table swapped in whole at the marker, changes
applied, and a broken value in the bucket logged and dropped without stopping the watch."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleethub.services.proxy.node import Node
from fleethub.services.proxy.upstream import Pool
from fleethub.services.proxy.watch import Watcher
from fleethub.shared.names import route_key
from fleethub.shared.registry import registry_key
from tests.integration.proxy.conftest import ProxyEnv
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


async def test_broken_values_are_dropped_and_the_watch_goes_on(env: ProxyEnv, caplog: pytest.LogCaptureFixture) -> None:
    await env.route("alice", "http://127.0.0.1:9001")
    await env.replica("api", "api-1", "http://127.0.0.1:8081")
    node = Node(port=1, upstream_timeout=1, pool=Pool(connect_timeout=1))
    watcher = Watcher(env.bus, node)
    task = asyncio.create_task(watcher.run())
    kv = await env.bus.js.key_value(env.bus.names.routes_bucket)
    registry = await env.bus.js.key_value(env.bus.names.registry_bucket)

    async def target(user: str) -> str | None:
        t = node.table.get(route_key(user)) if node.table is not None else None
        return t.target if t is not None else None

    async def is_(user: str, want: str | None) -> bool:
        return await target(user) == want

    try:
        await asyncio.wait_for(watcher.loaded.wait(), 10)
        assert await target("alice") == "http://127.0.0.1:9001"
        await wait_for(lambda: asyncio.sleep(0, node.replicas.has("api")), timeout=5, what="the api replica")
        with caplog.at_level(logging.WARNING, logger="fleethub"):
            await kv.put(route_key("alice"), b'{"routespec": "/user/alice/"')  # truncated
            await wait_for(lambda: is_("alice", None), timeout=5, what="the broken route dropped")
            await registry.put(registry_key("api", "api-1"), b"[]")
            await wait_for(lambda: asyncio.sleep(0, not node.replicas.has("api")), timeout=5, what="replica dropped")
        assert "ignoring route user.alice._" in caplog.text and "ignoring registry entry api.api-1" in caplog.text
        await env.route("alice", "http://127.0.0.1:9002")
        await wait_for(lambda: is_("alice", "http://127.0.0.1:9002"), timeout=5, what="the next value applied")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
