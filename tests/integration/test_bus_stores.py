"""The route and registry stores against a real NATS: our models in and out, undecodable values skipped
with a log line, the watch's snapshot-then-changes order, and our errors rather than nats ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from fleethub.shared.bus import Bus, BusError, registry_key
from fleethub.shared.events import RegistryEntry, Route
from fleethub.shared.names import route_key, server_prefix
from tests.support.cluster import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def bus(nats_url: str, nats_namespace: str) -> AsyncIterator[Bus]:
    b = Bus(nats_url, nats_namespace, "store-test")
    await b.connect()
    try:
        await b.ensure_topology()
        yield b
    finally:
        await b.close()


def _route(user: str, port: int) -> Route:
    return Route(routespec=server_prefix(user), target=f"http://127.0.0.1:{port}",
                 data={"user": user, "server_name": ""}, spawn_id=f"s-{user}")


async def _put_raw(bus: Bus, bucket: str, key: str, value: bytes) -> None:
    """Write bytes no store would write (a foreign or broken writer)."""
    await (await bus.js.key_value(bucket)).put(key, value)


async def test_routes_round_trip(bus: Bus) -> None:
    routes = bus.routes
    assert await routes.keys() == [] and await routes.snapshot() == {} and await routes.get("user.nobody._") is None
    alice, bob = _route("alice", 9001), _route("bob", 9002)
    await routes.put(route_key("alice"), alice)
    await routes.put(route_key("bob"), bob)
    assert await routes.get(route_key("alice")) == alice
    assert sorted(await routes.keys()) == ["user.alice._", "user.bob._"]
    assert await routes.snapshot() == {"user.alice._": alice, "user.bob._": bob}
    moved = _route("alice", 9003)
    await routes.put(route_key("alice"), moved)
    await routes.delete(route_key("bob"))
    await routes.delete(route_key("nobody"))  # absent: a no-op
    assert await routes.snapshot() == {"user.alice._": moved} and await routes.get(route_key("bob")) is None


async def test_undecodable_values_are_skipped_with_a_log_line(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    await bus.routes.put(route_key("alice"), _route("alice", 9001))
    await _put_raw(bus, bus.names.routes_bucket, "path.broken", b'{"routespec": "/broken/"}')  # no target
    with caplog.at_level(logging.WARNING, logger="fleethub.shared.bus"):
        assert list(await bus.routes.snapshot()) == ["user.alice._"]
        assert await bus.routes.get("path.broken") is None
    assert caplog.text.count("ignoring route path.broken") == 2


async def test_follow_gives_the_table_then_loaded_then_changes(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    alice = _route("alice", 9001)
    await bus.routes.put(route_key("alice"), alice)
    seen: list[tuple[str, Route | None]] = []
    loaded = asyncio.Event()

    def apply(key: str, route: Route | None, written: float) -> None:
        assert route is None or written > 0  # a value comes with when it was written
        seen.append((key, route))

    async def has(n: int) -> bool:
        return len(seen) >= n

    follow = asyncio.create_task(bus.routes.follow(apply, loaded.set))
    try:
        await asyncio.wait_for(loaded.wait(), 5)
        assert seen == [("user.alice._", alice)]
        bob = _route("bob", 9002)
        await bus.routes.put(route_key("bob"), bob)
        await bus.routes.delete(route_key("alice"))
        with caplog.at_level(logging.WARNING, logger="fleethub.shared.bus"):
            # a broken value is applied as None (the previous target must not stay), and the watch goes on
            await _put_raw(bus, bus.names.routes_bucket, route_key("bob"), b"not json")
            await bus.routes.put(route_key("carol"), _route("carol", 9004))
            await wait_for(lambda: has(5), timeout=5, what="every change")
        assert seen[1:] == [("user.bob._", bob), ("user.alice._", None), ("user.bob._", None),
                            ("user.carol._", _route("carol", 9004))]
        assert "ignoring route user.bob._" in caplog.text
        assert not follow.done()
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)


async def test_registry_round_trip(bus: Bus) -> None:
    api = RegistryEntry(service="api", replica="api-1", url="http://127.0.0.1:8081")
    auth = RegistryEntry(service="auth", replica="auth-1", url="http://127.0.0.1:8082")
    await bus.registry.put(api)
    await bus.registry.put(auth)
    await bus.registry.put(api)  # a refresh
    assert await bus.registry.snapshot() == {registry_key("api", "api-1"): api, registry_key("auth", "auth-1"): auth}
    await bus.registry.delete("auth", "auth-1")
    assert await bus.registry.snapshot() == {registry_key("api", "api-1"): api}


async def test_a_closed_bus_raises_our_error(nats_url: str, nats_namespace: str) -> None:
    b = Bus(nats_url, nats_namespace, "store-test")
    await b.connect()
    await b.ensure_topology()
    await b.close()
    with pytest.raises(BusError):
        await b.routes.put(route_key("alice"), _route("alice", 9001))
    with pytest.raises(BusError):
        await b.registry.snapshot()
    with pytest.raises(BusError):
        await b.routes.follow(lambda key, route, written: None, lambda: None)
