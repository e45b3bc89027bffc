"""Ready means reachable: after putting a route, wait until every live proxy node serves it.

Proxy nodes acknowledge the route bucket revision their served table holds (`<ns>.proxy.applied`, at
once when it moves and every `RoutesApplied.every` seconds). A node is live while it has been heard within
`LIVE_BEATS` of its heartbeats, and until it says it leaves. `wait_served(revision)` returns once every
live node has applied `revision`, or after `bound` seconds (logged with the nodes that lagged): a dead or partitioned
node, which cannot acknowledge anything, never holds a spawn back longer than that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fleethub.shared.bus import Bus, RoutesApplied
from fleethub.shared.bus.applied import HEARTBEAT

log = logging.getLogger(__name__)

BOUND = 2.0  # seconds a spawn waits at most for the proxy nodes
# a node not heard for this many of its heartbeats (`RoutesApplied.every`) is taken for dead (kill -9,
# partition). Generous: dropping a live node (its loop busy under load) would announce servers it does not
# serve; keeping a dead one costs `BOUND`
LIVE_BEATS = 6
PRIMING = 2 * HEARTBEAT  # after subscribing, how long until every live node has been heard at least once


class Propagation:
    """The proxy nodes' acknowledgements, as one spawner worker knows them."""

    def __init__(self, bus: Bus, *, bound: float = BOUND,
                 observe: Callable[[str, float], None] | None = None) -> None:
        self.bus = bus
        self.bound = bound
        # `observe(node, seconds)`: how long after its write each node first served a revision being waited for
        self.observe = observe
        self.waiting: dict[int, tuple[float, set[str]]] = {}  # revision → (written at, nodes that served it)
        self.nodes: dict[str, tuple[int, float]] = {}  # node → (revision applied, when taken for gone)
        self._since: float | None = None  # when the subscription started
        self._sub: Any = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Follow the acknowledgements (idempotent)."""
        if self._sub is None:
            self._sub = await self.bus.follow_applied(self._heard)
            self._since = time.monotonic()

    async def stop(self) -> None:
        """Stop following."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    def _heard(self, ack: RoutesApplied) -> None:
        if ack.serving:
            now = time.monotonic()
            self.nodes[ack.node] = (ack.revision, now + LIVE_BEATS * ack.every)
            for revision, (written, served) in self.waiting.items():
                if revision <= ack.revision and ack.node not in served:
                    served.add(ack.node)
                    if self.observe is not None:
                        self.observe(ack.node, now - written)
        else:
            self.nodes.pop(ack.node, None)
        self._changed.set()

    def behind(self, revision: int, now: float | None = None) -> list[str]:
        """The live nodes that have not applied `revision` yet."""
        now = time.monotonic() if now is None else now
        for node in [n for n, (_, gone) in self.nodes.items() if now > gone]:
            del self.nodes[node]  # not heard for too long: dead or cut off, waiting for it would be vain
        return sorted(n for n, (applied, _) in self.nodes.items() if applied < revision)

    async def wait_served(self, revision: int, what: str, written: float | None = None) -> list[str]:
        """Wait until every live proxy node serves `revision` of the route bucket (at most `bound`
        seconds); returns the nodes that still lagged (logged), [] when all serve it. `written`: when the
        write began (`time.monotonic()`), from which each node's propagation time is observed."""
        now = time.monotonic()
        written = now if written is None else written
        served = {node for node, (applied, _) in self.nodes.items() if applied >= revision}
        if self.observe is not None:
            for node in served:  # acknowledged while the write's answer was on its way to us
                self.observe(node, now - written)
        self.waiting.setdefault(revision, (written, served))
        try:
            return await self._wait_served(revision, what)
        finally:
            self.waiting.pop(revision, None)

    async def _wait_served(self, revision: int, what: str) -> list[str]:
        await self.start()
        assert self._since is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bound
        # just subscribed: a node not heard yet may be live; give every node a heartbeat to speak up
        primed = loop.time() + max(0.0, self._since + PRIMING - time.monotonic())
        while True:
            lagging = self.behind(revision)
            now = loop.time()
            if not lagging and now >= primed:
                return []
            if now >= deadline:
                if lagging:
                    log.warning("%s: route revision %d not acknowledged within %.1fs by proxy node(s) %s",
                                what, revision, self.bound, ", ".join(lagging))
                return lagging
            self._changed.clear()
            wake = min(deadline, primed) if now < primed else deadline
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, wake - now))
            except TimeoutError:
                pass
