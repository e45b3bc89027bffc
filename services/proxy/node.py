"""What the client connections of one proxy node share: tables, pool, activity. One loop, no locks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.proxy.activity import Activity
from services.proxy.replicas import Replicas
from services.proxy.table import RouteTable, Target
from services.proxy.upstream import Pool
from services.proxy.websocket import Tunnel

if TYPE_CHECKING:
    from services.proxy.server import ClientConnection

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
    tunnels: dict[str, set[Tunnel]] = field(default_factory=dict)  # open websockets per route key

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
        """Enforce deadlines, close idle connections both ways, expire replicas (called every second).

        Replicas expire only while NATS is up: during an outage they can not refresh their keys.
        """
        for conn in list(self.connections):
            conn.check_idle(now)
        self.pool.sweep()
        if nats_up:
            self.replicas.expire()
        else:
            self.replicas.extend()

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
