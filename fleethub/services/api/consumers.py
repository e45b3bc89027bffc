"""The api's event consumers: thin adapters (decode → domain function → ack decision), bound in one table."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from fleethub.services.api.activity import record_batch
from fleethub.services.api.servers import server_ended
from fleethub.shared import deadletters
from fleethub.shared.bus import Decision, Delivery, Handler
from fleethub.shared.events import ActivityReported, ServerFailed, ServerStopped, server_events_filter, subject_filter
from fleethub.shared.service import Runtime

log = logging.getLogger(__name__)


def activity_handler(runtime: Runtime) -> Handler:
    """Proxies' activity batches → `last_activity` of servers and users (one statement per batch)."""

    async def handle(delivery: Delivery) -> Decision:
        if not isinstance(delivery.message, ActivityReported):
            return Decision.term()
        async with runtime.sessions() as session, session.begin():
            await record_batch(session, delivery.message)
        return Decision.ack()

    return handle


def server_events_handler(runtime: Runtime) -> Handler:
    """A stopped or failed server loses its token, and its desired state follows."""

    async def handle(delivery: Delivery) -> Decision:
        msg = delivery.message
        if not isinstance(msg, ServerStopped | ServerFailed):
            return Decision.ack()  # progress and ready share the subject space; nothing to do
        async with runtime.sessions() as session, session.begin():
            await server_ended(session, msg.spawn_id, runtime.settings.nats_namespace)
        runtime.relay.kick()  # the revocations reach every replica's token cache now
        return Decision.ack()

    return handle


@dataclass(frozen=True)
class Binding:
    """One durable consumer: its name, what it reads, its handler and how many messages run at once."""

    durable: str
    subjects: Callable[[str], str]
    handler: Callable[[Runtime], Handler]
    concurrency: int


# A handler that raises is nak'ed with a growing delay by the bus (a database outage never drops an event);
# a malformed event, or one whose handler fails otherwise every time, ends as a dead letter.
CONSUMERS: tuple[Binding, ...] = (
    Binding("api-activity", lambda ns: subject_filter(ActivityReported, ns), activity_handler, 4),
    Binding("api-server-events", server_events_filter, server_events_handler, 8),
)


async def start_consumers(runtime: Runtime, wait: float = 10.0) -> None:
    """Run every consumer of the table as a background task of the runtime; return once each durable
    exists on the server (or after `wait` seconds), so no event published after start-up is missed."""
    ns = runtime.settings.nats_namespace
    bound = []
    for b in CONSUMERS:
        ready = asyncio.Event()
        bound.append(ready)
        consume = runtime.bus.consume(durable=b.durable, filter_subject=b.subjects(ns), kind="evt",
                                      handler=b.handler(runtime), concurrency=b.concurrency, bound=ready,
                                      dead_letter=deadletters.sink(runtime.sessions))
        runtime.spawn(consume, f"consumer-{b.durable}")
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in bound)), wait)
    except TimeoutError:
        log.warning("api consumers not all bound after %.0fs; serving anyway", wait)
