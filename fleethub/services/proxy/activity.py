"""Per-route activity, kept as plain counters on the request path and published in batches."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from fleethub.shared.bus import Bus
from fleethub.shared.events import ActivityReported, RouteActivity

log = logging.getLogger(__name__)


class Activity:
    """Last request time and request count per route key since the last batch (bounded by routes)."""

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def touch(self, key: str, request: bool = True) -> None:
        """Record a request (or, with `request=False`, websocket traffic) on a route; no await."""
        self.last[key] = time.time()
        if request:
            self.count[key] = self.count.get(key, 0) + 1

    def take(self) -> list[RouteActivity]:
        """The activity since the previous call."""
        last, count = self.last, self.count
        self.last, self.count = {}, {}
        return [
            RouteActivity(key=k, last_activity=datetime.fromtimestamp(t, UTC), requests=count.get(k, 0))
            for k, t in last.items()
        ]

    async def flush_loop(self, bus: Bus, node: str, interval: float) -> None:
        """Publish one batch every `interval` seconds when anything happened."""
        while True:
            await asyncio.sleep(interval)
            await self.flush(bus, node)

    async def flush(self, bus: Bus, node: str) -> None:
        """Publish the activity since the previous batch, if any."""
        routes = self.take()
        if not routes:
            return
        try:
            await bus.publish(ActivityReported(node=node, routes=routes))
        except Exception as exc:  # NATS away: this batch is lost, the next one carries newer times
            log.warning("activity batch of %d routes not published: %s", len(routes), exc)
