"""Proxy nodes' acknowledgements of the route table they serve: which revision of the route bucket each
node has applied, on one core subject (`<ns>.proxy.applied`), so a spawner can announce a server ready
only once every live node serves its route.

Core NATS on purpose: an acknowledgement is a fact about now, worth nothing once stale; a node repeats
its own every `HEARTBEAT` seconds (which is also how a spawner learns which nodes are alive), so a lost
one costs at most one heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleethub.shared.bus.connection import Connection

log = logging.getLogger(__name__)

APPLIED_SUBJECT = "{ns}.proxy.applied"
HEARTBEAT = 0.5  # seconds between a serving node's repeats of its acknowledgement


def applied_subject(namespace: str) -> str:
    """The subject proxy nodes publish their applied route revision on."""
    return APPLIED_SUBJECT.format(ns=namespace)


class RoutesApplied(BaseModel):
    """One proxy node's acknowledgement: it serves every change of the route bucket up to `revision`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    node: str = Field(description="The node's replica id (each worker of a node is a node of its own).")
    revision: int = Field(ge=0, description="The route bucket's stream sequence it has applied, all before "
                                            "it included (0: an empty bucket).")
    serving: bool = Field(default=True, description="False in the last message of a node that stops serving.")
    at: float = Field(default=0.0, description="When the node's table reached `revision` (epoch seconds, the "
                                               "node's clock; 0: unknown). For measurements, not for decisions.")
    every: float = Field(default=HEARTBEAT, gt=0, description="Seconds until the node repeats this at the latest "
                                                          "(its heartbeat; a spawner takes a node not heard for "
                                                          "six of them for gone).")


async def publish_applied(conn: Connection, namespace: str, ack: RoutesApplied) -> None:
    """Publish `ack` (core, fire and forget: while NATS is away it is buffered or lost, both harmless)."""
    await conn.nc.publish(applied_subject(namespace), ack.model_dump_json().encode())


async def follow_applied(conn: Connection, namespace: str, callback: Callable[[RoutesApplied], None]) -> Any:
    """Call `callback` with every node's acknowledgement; an unreadable one is logged and skipped.

    Returns the subscription (its `unsubscribe()` ends it).
    """

    async def on_msg(msg: Msg) -> None:
        try:
            ack = RoutesApplied.model_validate_json(msg.data)
        except ValidationError as exc:
            log.warning("ignoring an unreadable route acknowledgement: %s", str(exc)[:300])
            return
        callback(ack)

    return await conn.nc.subscribe(applied_subject(namespace), cb=on_msg)
