"""Telling spawners which route revision this node serves: at once when it moves, and every `HEARTBEAT`
seconds anyway (the repeat is how spawners know the node is alive; one that stops hearing it stops
waiting for the node)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fleethub.services.proxy.node import Node
from fleethub.shared.bus import Bus, RoutesApplied
from fleethub.shared.bus.applied import HEARTBEAT

log = logging.getLogger(__name__)


async def announce_loop(node: Node, bus: Bus, node_id: str, every: float = HEARTBEAT) -> None:
    """Publish `node.applied` whenever it changes (changes in between are coalesced) and every `every`
    seconds; run only while the node serves (listening, its table loaded)."""
    while True:
        node.applied_changed.clear()
        try:
            await bus.publish_applied(RoutesApplied(node=node_id, revision=node.applied, at=node.applied_at,
                                                    every=every))
        except Exception as exc:  # NATS away: the next heartbeat tries again
            log.debug("route acknowledgement not published: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.applied_changed.wait(), every)


async def announce_leaving(node: Node, bus: Bus, node_id: str) -> None:
    """Tell spawners this node stops serving, so they stop waiting for it at once."""
    with contextlib.suppress(Exception):
        await bus.publish_applied(RoutesApplied(node=node_id, revision=node.applied, serving=False))
