"""A durable consumer's long idle pull (`Connection.idle_fetch`, what `fleethub up` uses): a message that comes
while it waits is handled as it arrives, and a stop ends the consumer without waiting for the pull to expire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fleethub.shared.bus import Bus, Decision
from fleethub.shared.bus.consume import Delivery
from fleethub.shared.events import SpawnServer, backend_commands_filter, new_id

pytestmark = pytest.mark.integration

IDLE_PULL = 60.0  # far longer than anything the tests wait for


@pytest.fixture
async def bus(nats_url: str, nats_namespace: str) -> AsyncIterator[Bus]:
    b = Bus(nats_url, nats_namespace, "idle-fetch-test")
    b.connection.idle_fetch = IDLE_PULL
    await b.connect()
    try:
        await b.ensure_topology()
        yield b
    finally:
        await b.close()


async def test_a_long_idle_pull_hands_over_each_message_and_ends_on_stop(bus: Bus, nats_namespace: str) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def handler(delivery: Delivery) -> Decision:
        assert isinstance(delivery.message, SpawnServer)
        await seen.put(delivery.message.user)
        return Decision.ack()

    stop, bound = asyncio.Event(), asyncio.Event()
    consumer = asyncio.create_task(bus.consume(
        durable=f"idle-{new_id()[:8]}", filter_subject=backend_commands_filter(nats_namespace, "idletest"),
        kind="cmd", handler=handler, stop=stop, bound=bound))
    try:
        await asyncio.wait_for(bound.wait(), 15)
        for user in ("ann", "bob"):  # each published while the consumer waits in a pull of a minute
            await asyncio.sleep(0.5)
            await bus.publish(SpawnServer(user=user, spawn_id=new_id(), backend="idletest"))
            assert await asyncio.wait_for(seen.get(), 15) == user  # not held until the pull expires
        stop.set()
        await asyncio.wait_for(asyncio.shield(consumer), 15)  # the pending pull is abandoned at once
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
