"""Thin adapters from commands on the bus to the worker's logic; the ack decision is the return value."""

from __future__ import annotations

from fleethub.services.spawner.lifecycle import Worker
from fleethub.shared.bus import Decision, Delivery, Handler
from fleethub.shared.events import SpawnServer, StopServer


def command_handler(worker: Worker) -> Handler:
    """The handler of the `spawner` consumer: one branch per command type."""

    async def handle(delivery: Delivery) -> Decision:
        msg = delivery.message
        if isinstance(msg, SpawnServer):
            return await worker.spawn(msg, delivery.in_progress)
        if isinstance(msg, StopServer):
            return await worker.stop(msg)
        return Decision.term()

    return handle
