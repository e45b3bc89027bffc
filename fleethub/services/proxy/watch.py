"""Keeping a node's route table and replica list in step with their KV buckets.

A watch delivers every current value, then a `None` marker, then every change. Each sync fills a
fresh table and swaps it in whole at the marker, so a node never serves a partial table; until its
first marker it serves no user route at all. After a NATS reconnect, a failed watch, or every
`RESYNC_EVERY` seconds (a watch is a cache: a missed update must not live forever) it syncs again,
serving the previous table meanwhile. An entry that does not agree with its key (`entries`) is logged
and not served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fleethub.services.proxy.entries import check_registry, check_route
from fleethub.services.proxy.node import Node
from fleethub.services.proxy.replicas import Replicas
from fleethub.services.proxy.table import RouteTable
from fleethub.shared.bus import Bus
from fleethub.shared.events import RegistryEntry, Route

log = logging.getLogger(__name__)

RESYNC_EVERY = 300.0
RETRY_DELAY = 0.5


class _RouteSync:
    """One sync of the route bucket: a fresh table until the marker, then the node's live one.

    It also tracks the bucket revision applied (`Node.applied`): the node serves it once live.
    """

    def __init__(self, node: Node, on_loaded: Callable[[int], None]) -> None:
        self.node = node
        self.fresh = RouteTable()
        self.live = False
        self.on_loaded = on_loaded
        self.revision = 0

    def applied(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if self.live:
            self.node.set_applied(self.revision)

    def apply(self, key: str, route: Route | None, written: float) -> None:
        table = self.node.table if self.live and self.node.table is not None else self.fresh
        old = None
        if route is not None:
            try:
                old = table.put(key, check_route(key, route), written)
            except ValueError as exc:
                log.warning("ignoring route %s: %s", key[:200], str(exc)[:300])
                old = table.delete(key)  # a broken route must not leave the previous target in place
        else:
            old = table.delete(key)  # deleted, or a value that does not decode (the bus logged it)
        if self.live:
            if old is not None:
                new = table.get(key)
                if new is None or new.origin != old.origin:
                    self.node.route_gone(old)
            self.node.routes_changed()

    def snapshot_done(self) -> None:
        if not self.live:
            self.live = True
            self.node.swap_table(self.fresh)
            self.node.routes_changed()
            self.node.set_applied(self.revision)
            self.on_loaded(len(self.fresh))


class _ReplicaSync:
    """One sync of the registry bucket, swapped in at its marker like the routes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.fresh = Replicas()
        self.live = False

    def apply(self, key: str, entry: RegistryEntry | None, written: float) -> None:
        replicas = self.node.replicas if self.live else self.fresh
        age = max(0.0, time.time() - written) if written else 0.0
        if entry is None:  # deleted, or a value that does not decode (the bus logged it)
            replicas.delete(key)
            return
        try:
            replicas.put(key, check_registry(key, entry), age)
        except ValueError as exc:
            log.warning("ignoring registry entry %s: %s", key[:200], str(exc)[:300])
            replicas.delete(key)

    def snapshot_done(self) -> None:
        if not self.live:
            self.live = True
            self.node.replicas = self.fresh


class Watcher:
    """Keeps the route table and the replica list of one node in sync, each on its own.

    The two buckets are watched independently, so a failure of one never holds back the other;
    a reconnect to NATS resyncs both.
    """

    def __init__(self, bus: Bus, node: Node, *, resync_every: float = RESYNC_EVERY) -> None:
        self.bus = bus
        self.node = node
        self.resync_every = resync_every
        self.loaded = asyncio.Event()  # set once the first complete route table is served
        self._kicks = {"routes": asyncio.Event(), "registry": asyncio.Event()}

    async def run(self) -> None:
        """Sync both buckets until cancelled."""
        tasks = [
            asyncio.create_task(self._keep("routes")),
            asyncio.create_task(self._keep("registry")),
            asyncio.create_task(self._relay_reconnects()),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _relay_reconnects(self) -> None:
        while True:
            await self.bus.reconnected.wait()
            self.bus.reconnected.clear()
            for kick in self._kicks.values():
                kick.set()

    def _new_sync(self, kind: str, syncs: int) -> Coroutine[Any, Any, Any]:
        """One sync of `kind` from a fresh table: the watch that fills it (it runs until it fails)."""
        if kind == "registry":
            replicas = _ReplicaSync(self.node)
            return self.bus.registry.follow(replicas.apply, replicas.snapshot_done)
        started = time.monotonic()

        def loaded(n: int) -> None:
            self.loaded.set()
            log.info("route table %s: %d routes in %.0f ms", "loaded" if syncs == 1 else "resynced", n,
                     (time.monotonic() - started) * 1000)

        routes = _RouteSync(self.node, loaded)
        return self.bus.routes.follow(routes.apply, routes.snapshot_done, routes.applied)

    async def _keep(self, kind: str) -> None:
        kick = self._kicks[kind]
        syncs = 0
        while True:
            kick.clear()
            syncs += 1
            reason = await self._sync_once(self._new_sync(kind, syncs), kick)
            log.info("resyncing %s (%s)", kind, reason)
            if reason.startswith("watch failed"):
                await self._repair()

    async def _sync_once(self, watch: Coroutine[Any, Any, Any], kick: asyncio.Event) -> str:
        """Run `watch` until a reason to start over; returns that reason."""
        tasks = {
            asyncio.create_task(watch): "watch failed",
            asyncio.create_task(kick.wait()): "reconnected to NATS",
            asyncio.create_task(asyncio.sleep(self.resync_every)): "periodic resync",
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        task = next(iter(done))
        reason = tasks[task]
        if reason == "watch failed":
            exc = task.exception() if not task.cancelled() else None
            return f"watch failed: {exc!r}"[:300]
        return reason

    async def _repair(self) -> None:
        """After a failed watch: check the buckets are back (a restarted NATS loses in-memory ones until auth
        or the api declares them again), then wait a little."""
        try:
            await self.bus.ensure_topology(timeout=RETRY_DELAY)
        except Exception as exc:  # NATS away: the next attempt will tell
            log.warning("cannot declare the buckets: %s", str(exc)[:300])
        await asyncio.sleep(RETRY_DELAY)
