"""Thin adapters from commands on the bus to the worker's logic; the ack decision is the return value.

A command the bus gives up on (malformed, or its handling failed every time: a poison command) is recorded
as a dead letter, and a spawn's server is marked failed with the reason, so its user sees why.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.spawner import leases
from fleethub.services.spawner.lifecycle import Worker
from fleethub.shared import deadletters
from fleethub.shared.bus import DeadLetter, DeadLetterSink, Decision, Delivery, Handler
from fleethub.shared.events import LEGACY_BACKEND, SpawnServer, StopServer
from fleethub.shared.faults import fault
from fleethub.shared.lifecycle import ServerKey, ServerStatus, Transition, transition
from fleethub.shared.names import storable

log = logging.getLogger(__name__)


def command_handler(worker: Worker) -> Handler:
    """The handler of the `spawner` consumer: one branch per command type."""

    async def handle(delivery: Delivery) -> Decision:
        msg = delivery.message
        if isinstance(msg, SpawnServer):
            fault("spawner.handle_spawn")
            return await worker.spawn(msg, delivery.in_progress)
        if isinstance(msg, StopServer):
            return await worker.stop(msg)
        return Decision.term()

    return handle


def dead_letter_sink(worker: Worker) -> DeadLetterSink:
    """The `spawner` consumer's dead letters: recorded, and a dead spawn's server marked failed."""

    async def fail_spawn(session: AsyncSession, letter: DeadLetter) -> None:
        if isinstance(letter.message, SpawnServer):
            await _fail_spawn(session, worker, letter.message, letter.reason)

    return deadletters.sink(worker.rt.sessions, fail_spawn)


async def _fail_spawn(session: AsyncSession, worker: Worker, cmd: SpawnServer, reason: str) -> None:
    """Record `cmd`'s spawn as failed (if it is still the requested one and no live worker is on it)."""
    if not (storable(cmd.user) and storable(cmd.server_name) and storable(cmd.spawn_id)):
        return  # PostgreSQL can hold no row of such a name (the api refuses it): nothing to mark
    key = ServerKey(cmd.user, cmd.server_name)
    if not await leases.is_desired(session, key, cmd.spawn_id):
        return
    me, ttl = worker.me, worker.ttl
    claimed = await transition(session, Transition.claim(key, cmd.spawn_id, worker=me, lease_ttl=ttl,
                                                         backend=cmd.backend or LEGACY_BACKEND),
                               worker.announcer)
    if claimed is None:
        row = await leases.get(session, key)
        if row is None or row.spawn_id != cmd.spawn_id or row.status != ServerStatus.PENDING:
            return  # done already, or another spawn's
        if key in worker.working:
            return  # a task of mine is on it (a spawn or an adoption): its outcome stands
        taken = await leases.take_pending(session, key, cmd.spawn_id, me=me, ttl=ttl)
        if taken is None:
            return  # a live worker is starting it: its outcome stands
        if taken.state:
            await worker.backend_of(taken.backend).stop(taken.state)
    message = deadletters.storable_text(f"the spawner could not handle this spawn: {reason}")
    await transition(session, Transition.failed(key, cmd.spawn_id, worker=me, message=message), worker.announcer)
    log.warning("spawn %s of %s marked failed: its command is a dead letter", cmd.spawn_id, key)
