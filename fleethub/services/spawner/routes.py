"""The spawner's side of the route table: put a server's route before it is announced ready, delete it
before it is announced stopped. The reconciliation with PostgreSQL is `fleethub.shared.routes` (the api
runs it too).

A route write that NATS does not answer (a NATS restart, a reconnect) is tried again with a growing delay
for up to `RETRY_FOR` seconds: a short bus outage delays a spawn or stop, it never fails it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fleethub.shared.bus import Bus, BusError
from fleethub.shared.events import Route
from fleethub.shared.names import route_key

__all__ = ["RETRY_FOR", "delete_route", "put_route"]

log = logging.getLogger(__name__)

RETRY_FOR = 30.0  # seconds a route write is retried before its error is raised
FIRST_DELAY = 0.1
MAX_DELAY = 2.0

T = TypeVar("T")


async def _retrying(what: str, write: Callable[[], Awaitable[T]], retry_for: float = RETRY_FOR) -> T:
    deadline = time.monotonic() + retry_for
    delay = FIRST_DELAY
    while True:
        try:
            return await write()
        except BusError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)


async def put_route(bus: Bus, route: Route, *, retry_for: float = RETRY_FOR) -> int:
    """Upsert a route; every proxy node sees it through its watch. Returns the bucket revision written.

    `retry_for`: seconds to keep trying (a spawn tries for about a lease, then hands the spawn to a worker
    that may reach NATS, rather than holding it through a partition of its own).

    Raises:
        BusError: NATS did not take it within `retry_for` seconds.
    """
    key = route_key(route.data["user"], route.data["server_name"])
    return await _retrying(f"put route {key}", lambda: bus.routes.put(key, route), retry_for)


async def delete_route(bus: Bus, user: str, server_name: str) -> None:
    """Delete a route (a no-op if it is absent).

    Raises:
        BusError: NATS did not take it within `RETRY_FOR` seconds.
    """
    key = route_key(user, server_name)
    await _retrying(f"delete route {key}", lambda: bus.routes.delete(key))
