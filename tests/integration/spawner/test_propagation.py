"""The spawner's wait for the proxy nodes (`services/spawner/propagation.py`) against real NATS: it returns
once every live node has acknowledged the revision, gives up on a node after its bound, and does not wait
for a node that left or went silent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fleethub.services.spawner.propagation import Propagation
from fleethub.shared.bus import Bus, RoutesApplied

pytestmark = pytest.mark.integration


@pytest.fixture
async def buses(nats_url: str, nats_namespace: str) -> AsyncIterator[tuple[Bus, Bus]]:
    spawner, proxy = Bus(nats_url, nats_namespace, "test-spawner"), Bus(nats_url, nats_namespace, "test-proxy")
    await spawner.connect()
    await proxy.connect()
    try:
        yield spawner, proxy
    finally:
        await spawner.close()
        await proxy.close()


async def _ack(bus: Bus, node: str, revision: int, serving: bool = True, every: float = 0.5) -> None:
    await bus.publish_applied(RoutesApplied(node=node, revision=revision, serving=serving, every=every))
    await bus.nc.flush()


async def _heard(p: Propagation, node: str, revision: int, bus: Bus, every: float = 0.5) -> None:
    """Wait until `p` knows `node` at `revision`, saying it again every 0.5 s as a node's heartbeat does:
    acknowledgements are core NATS messages, at most once (a CI run on a loaded machine lost one)."""
    for i in range(400):
        if p.nodes.get(node, (-1, 0.0))[0] == revision:
            return
        if i and i % 50 == 0:
            await _ack(bus, node, revision, every=every)
        await asyncio.sleep(0.01)
    raise AssertionError(f"{node} at {revision} never heard: {p.nodes}")


async def test_the_wait_ends_when_every_live_node_serves_the_revision(buses: tuple[Bus, Bus]) -> None:
    spawner, proxy = buses
    p = Propagation(spawner, bound=30.0)
    await p.start()
    await spawner.nc.flush()
    await _ack(proxy, "n1", 10)
    await _ack(proxy, "n2", 12)
    await _heard(p, "n1", 10, proxy)
    await _heard(p, "n2", 12, proxy)
    waiting = asyncio.create_task(p.wait_served(12, "test"))
    await asyncio.sleep(1.5)  # past the priming second: only n1 holds it back
    assert not waiting.done() and p.behind(12) == ["n1"]
    await _ack(proxy, "n1", 13)
    assert await asyncio.wait_for(waiting, 5) == []
    # a node that leaves is not waited for; one that is live but never catches up is, until the bound
    await _ack(proxy, "n2", 13, serving=False)
    await _heard_gone(p, "n2")
    p.bound = 0.5
    assert await p.wait_served(14, "test") == ["n1"]
    await p.stop()


async def _heard_gone(p: Propagation, node: str) -> None:
    for _ in range(200):
        if node not in p.nodes:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{node} still known: {p.nodes}")


async def test_a_silent_node_is_not_waited_for(buses: tuple[Bus, Bus]) -> None:
    """A node is taken for gone after six of its own heartbeats (`every`) without a word."""
    spawner, proxy = buses
    p = Propagation(spawner, bound=30.0)
    await p.start()
    await spawner.nc.flush()
    await _ack(proxy, "dead", 1, every=0.05)  # then killed: it says nothing more
    await _heard(p, "dead", 1, proxy, every=0.05)
    assert await asyncio.wait_for(p.wait_served(5, "test"), 5) == []
    assert "dead" not in p.nodes
    await p.stop()


async def test_a_slow_heartbeat_keeps_a_node_live_longer(buses: tuple[Bus, Bus]) -> None:
    """A node that says it repeats itself every 10 s (`fleethub up`'s) is still waited for 3.5 s later."""
    spawner, proxy = buses
    p = Propagation(spawner, bound=1.0)
    await p.start()
    await spawner.nc.flush()
    await _ack(proxy, "slow", 1, every=10.0)
    await _heard(p, "slow", 1, proxy, every=10.0)
    await asyncio.sleep(3.5)  # one of the default heartbeat (0.5 s) would have been taken for gone after 3 s
    assert await p.wait_served(5, "test") == ["slow"]
    await p.stop()
