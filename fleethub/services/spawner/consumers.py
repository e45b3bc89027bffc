"""Thin adapters from commands on the bus to the worker's logic; the ack decision is the return value."""

from __future__ import annotations

from fleethub.services.spawner.lifecycle import Worker
from fleethub.shared.bus import Decision, Delivery
from fleethub.shared.events import SpawnServer, StopServer

RETRY_DELAY = 0.5


def _decide(result: str) -> Decision:
    return Decision.ack() if result == "ack" else Decision.nak(RETRY_DELAY)


def command_handler(worker: Worker):  # type: ignore[no-untyped-def]
    """The handler of the `spawner` consumer: one branch per command type."""

    async def handle(delivery: Delivery) -> Decision:
        msg = delivery.message
        if isinstance(msg, SpawnServer):
            return _decide(await worker.spawn(msg, delivery.in_progress))
        if isinstance(msg, StopServer):
            return _decide(await worker.stop(msg))
        return Decision.term()

    return handle
