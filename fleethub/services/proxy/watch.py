"""Keeping a node's route table and replica list in step with their KV buckets.

A watch delivers every current value, then a `None` marker, then every change. Each sync fills a
fresh table and swaps it in whole at the marker, so a node never serves a partial table; until its
first marker it serves no user route at all. After a NATS reconnect, a failed watch, or every
`RESYNC_EVERY` seconds (a watch is a cache: a missed update must not live forever) it syncs again,
serving the previous table meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from fleethub.services.proxy.node import Node
from fleethub.services.proxy.replicas import Replicas
from fleethub.services.proxy.table import RouteTable
from fleethub.shared.bus import Bus
from fleethub.shared.errors import BusError
from fleethub.shared.events import RegistryEntry, Route

log = logging.getLogger(__name__)

DELETES = ("DEL", "PURGE")
RESYNC_EVERY = 300.0
RETRY_DELAY = 0.5
WATCH_INACTIVE = 15.0

Apply = Callable[[str, bytes | None, float], None]


def _written(created: object) -> float:
    """When a KV value was written, in epoch seconds (0 when unknown)."""
    return created.timestamp() if isinstance(created, datetime) else 0.0


async def follow(bus: Bus, bucket: str, apply: Apply, snapshot_done: Callable[[], None]) -> None:
    """Apply every value of `bucket` and every change after it; `snapshot_done` at the initial marker.

    Runs until cancelled; a watch that ends by itself raises `BusError` (the caller resyncs).
    """
    kv = await bus.kv(bucket)
    # a stopped watch's ephemeral consumer lingers on the server for this long (nats-py's default: 5 min)
    watcher = await kv.watch(">", inactive_threshold=WATCH_INACTIVE)
    try:
        async for entry in watcher:
            if entry is None:
                snapshot_done()
            elif entry.operation in DELETES:
                apply(entry.key, None, 0.0)
            else:
                apply(entry.key, entry.value, _written(entry.created))
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
    raise BusError(f"watch of {bucket} ended")


class _RouteSync:
    """One sync of the route bucket: a fresh table until the marker, then the node's live one."""

    def __init__(self, node: Node, on_loaded: Callable[[int], None]) -> None:
        self.node = node
        self.fresh = RouteTable()
        self.live = False
        self.on_loaded = on_loaded

    def apply(self, key: str, value: bytes | None, written: float) -> None:
        table = self.node.table if self.live and self.node.table is not None else self.fresh
        old = None
        if value is not None:
            try:
                old = table.put(key, Route.model_validate_json(value), written)
            except ValueError as exc:
                log.warning("ignoring route %s: %s", key[:200], str(exc)[:300])
                old = table.delete(key)  # a broken value must not leave the previous target in place
        else:
            old = table.delete(key)
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
            self.on_loaded(len(self.fresh))


class _ReplicaSync:
    """One sync of the registry bucket, swapped in at its marker like the routes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.fresh = Replicas()
        self.live = False

    def apply(self, key: str, value: bytes | None, written: float) -> None:
        replicas = self.node.replicas if self.live else self.fresh
        age = max(0.0, time.time() - written) if written else 0.0
        if value is None:
            replicas.delete(key)
            return
        try:
            replicas.put(key, RegistryEntry.model_validate_json(value), age)
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

    def _new_sync(self, kind: str, syncs: int) -> tuple[str, _RouteSync | _ReplicaSync]:
        if kind == "registry":
            return self.bus.names.registry_bucket, _ReplicaSync(self.node)
        started = time.monotonic()

        def loaded(n: int) -> None:
            self.loaded.set()
            log.info("route table %s: %d routes in %.0f ms", "loaded" if syncs == 1 else "resynced", n,
                     (time.monotonic() - started) * 1000)

        return self.bus.names.routes_bucket, _RouteSync(self.node, loaded)

    async def _keep(self, kind: str) -> None:
        kick = self._kicks[kind]
        syncs = 0
        while True:
            kick.clear()
            syncs += 1
            bucket, sync = self._new_sync(kind, syncs)
            reason = await self._sync_once(bucket, sync, kick)
            log.info("resyncing %s (%s)", kind, reason)
            if reason.startswith("watch failed"):
                await self._repair()

    async def _sync_once(self, bucket: str, sync: _RouteSync | _ReplicaSync, kick: asyncio.Event) -> str:
        """Follow `bucket` until a reason to start over; returns that reason."""
        tasks = {
            asyncio.create_task(follow(self.bus, bucket, sync.apply, sync.snapshot_done)): "watch failed",
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
        """After a failed watch: redeclare the buckets (a restarted NATS loses in-memory ones), then wait a little."""
        try:
            await self.bus.ensure_topology(timeout=RETRY_DELAY)
        except Exception as exc:  # NATS away: the next attempt will tell
            log.warning("cannot declare the buckets: %s", str(exc)[:300])
        await asyncio.sleep(RETRY_DELAY)
