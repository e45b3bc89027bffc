"""What the client connections of one proxy node share: tables, pool, activity. One loop, no locks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fleethub.services.proxy.activity import Activity
from fleethub.services.proxy.hosts import Hosts
from fleethub.services.proxy.replicas import Replicas
from fleethub.services.proxy.table import RouteTable, Target
from fleethub.services.proxy.upstream import Pool
from fleethub.services.proxy.websocket import Tunnel
from fleethub.shared.pulse import Pulse

if TYPE_CHECKING:
    from fleethub.services.proxy.server import ClientConnection

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Node:
    """The state of one proxy node. Tables are replaced by assignment, so a request sees one whole table."""

    port: int  # the public port (X-Forwarded-Port)
    upstream_timeout: float
    pool: Pool
    activity: Activity = field(default_factory=Activity)
    replicas: Replicas = field(default_factory=Replicas)
    table: RouteTable | None = None  # None until the first complete snapshot of the route bucket
    connections: set[ClientConnection] = field(default_factory=set)
    arrived: Pulse = field(default_factory=Pulse)  # the first client connection after none: the sweep wakes
    tunnels: dict[str, set[Tunnel]] = field(default_factory=dict)  # open websockets per route key
    trusted: Callable[[str], bool] = field(default=lambda ip: False)  # whose X-Forwarded-* are believed
    seen: dict[str, float] = field(default_factory=dict)  # last activity per route key, every node's (route API)
    hosts: Hosts | None = None  # the Host values accepted (None: any)
    scheme: bytes = b"http"  # of the public port (X-Forwarded-Proto for untrusted clients)
    base_url: str = "/"  # the hub's base_url: paths are routed with it taken off
    hsts: bytes = b""  # a Strict-Transport-Security line for the hub's own responses (https public URL)
    applied: int = 0  # the route bucket revision the served table holds (everything up to it applied)
    applied_changed: asyncio.Event = field(default_factory=asyncio.Event)  # set when `applied` moves
    applied_at: float = 0.0  # when (epoch seconds) the table reached `applied`
    # counted on the hot path as plain integers, read by the metrics collector when scraped
    requests: int = 0  # HTTP requests received from clients
    bytes_in: int = 0  # bytes received from clients
    bytes_out: int = 0  # bytes sent to clients (websocket frames included)
    _changed: asyncio.Event | None = None

    def set_applied(self, revision: int) -> None:
        """The served table now holds the bucket up to `revision` (acknowledged by `applied.announce`)."""
        if revision != self.applied:
            self.applied = revision
            self.applied_at = time.time()
            self.applied_changed.set()

    def routes_changed(self) -> None:
        """The table changed: wake whoever waits for a change to arrive (`wait_routes`)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_routes(self, done: Callable[[RouteTable], bool], timeout: float) -> bool:
        """Wait until `done(table)` holds for the served table (a write made elsewhere has arrived here)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.table is None or not done(self.table):
            left = deadline - loop.time()
            if left <= 0:
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return self.table is not None and done(self.table)
        return True

    def saw(self, key: str, when: float) -> None:
        """Record activity on a route (from any node's batch); kept for routes in the table only."""
        if when > self.seen.get(key, 0.0) and self.table is not None and self.table.get(key) is not None:
            self.seen[key] = when

    def last_activity(self, target: Target) -> float:
        """The newest activity known on a route: requests seen anywhere, else when it was written."""
        return max(self.seen.get(target.key, 0.0), self.activity.last.get(target.key, 0.0), target.created)

    def swap_table(self, table: RouteTable) -> None:
        """Serve `table` from now on; connections to routes it no longer has (or moved) are closed."""
        old, self.table = self.table, table
        if old is not None:
            for target in old:
                now = table.get(target.key)
                if now is None or now.origin != target.origin:
                    self.route_gone(target)

    def route_gone(self, target: Target) -> None:
        """A route was deleted or now points elsewhere.

        Its websockets are closed and idle connections to its origin dropped: a new server may take
        over that port, and no connection must reach another user's server.
        """
        for tunnel in list(self.tunnels.get(target.key, ())):
            tunnel.close()
        self.pool.discard(target.origin)

    def sweep(self, now: float, *, nats_up: bool = True) -> None:
        """Enforce deadlines, close idle connections both ways, expire replicas (every second while there are
        connections, see `idle`).

        Replicas expire only while NATS is up: during an outage they can not refresh their keys.
        """
        for conn in list(self.connections):
            conn.check_idle(now)
        self.pool.sweep()
        table = self.table
        if table is not None and len(self.seen) > len(table):  # routes deleted since: forget their activity
            self.seen = {k: t for k, t in self.seen.items() if table.get(k) is not None}
        if nats_up:
            self.replicas.expire()
        else:
            self.replicas.extend()

    @property
    def idle(self) -> bool:
        """No client connection, and none pooled: a sweep has nothing to close (a connection's arrival
        notifies `arrived`; replicas expire at the next sweep, before any request can reach one)."""
        return not self.connections and not self.pool.idle_count()

    def close_idle(self) -> int:
        """Close client connections between requests (shutdown); returns how many are still busy."""
        busy = 0
        for conn in list(self.connections):
            if not conn.close_if_idle():
                busy += 1
        return busy

    def abort_all(self) -> None:
        """Cut every client connection (end of the shutdown grace)."""
        for conn in list(self.connections):
            conn.abort()
