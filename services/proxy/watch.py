"""Keeping a node's route table and replica list in step with their KV buckets.

A watch delivers every current value, then a marker, then every change. The node answers user
routes only after the first complete table; after a reconnect (or a failed watch) it builds a new
table from a fresh watch and swaps it in whole, serving the old one meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from shared.bus import REGISTRY_TTL, Bus
from shared.events import RegistryEntry, Route

from services.proxy.table import RouteTable, _origin

log = logging.getLogger(__name__)
DELETES = ("DEL", "PURGE")


class Registry:
    """Live auth and api replicas, with round-robin choice."""

    def __init__(self) -> None:
        self.by_key: dict[str, tuple[str, tuple[str, int]]] = {}
        self.seen: dict[str, float] = {}
        self._lists: dict[str, list[tuple[str, int]]] = {}
        self._next: dict[str, int] = {}

    def _rebuild(self) -> None:
        lists: dict[str, list[tuple[str, int]]] = {}
        for service, origin in self.by_key.values():
            lists.setdefault(service, []).append(origin)
        self._lists = lists

    def put(self, key: str, entry: RegistryEntry) -> None:
        self.seen[key] = time.monotonic()
        if self.by_key.get(key) != (entry.service, _origin(entry.url)):
            self.by_key[key] = (entry.service, _origin(entry.url))
            self._rebuild()

    def expire(self) -> None:
        """Drop replicas not refreshed within the TTL: an expired key may come with no delete marker."""
        limit = time.monotonic() - REGISTRY_TTL
        stale = [k for k, t in self.seen.items() if t < limit]
        for key in stale:
            self.seen.pop(key, None)
            self.by_key.pop(key, None)
        if stale:
            self._rebuild()

    def delete(self, key: str) -> None:
        self.seen.pop(key, None)
        if self.by_key.pop(key, None) is not None:
            self._rebuild()

    def replace(self, other: Registry) -> None:
        self.by_key = other.by_key
        self.seen = other.seen
        self._rebuild()

    def choose(self, service: str, avoid: tuple[str, int] | None = None) -> tuple[str, int] | None:
        """The next replica of `service` (round robin), other than `avoid` if possible."""
        options = self._lists.get(service)
        if not options:
            return None
        i = self._next.get(service, 0)
        for step in range(len(options)):
            origin = options[(i + step) % len(options)]
            if origin != avoid or len(options) == 1:
                self._next[service] = (i + step + 1) % len(options)
                return origin
        return None

    def forget(self, origin: tuple[str, int]) -> None:
        """Drop a replica that refused a connection (its key will expire by TTL anyway)."""
        for key, (_, o) in list(self.by_key.items()):
            if o == origin:
                del self.by_key[key]
        self._rebuild()


async def _follow(bus: Bus, bucket: str, apply: Callable[[str, bytes | None], None], on_complete: Callable[[], None],
                  stop: asyncio.Event) -> None:
    kv = await bus.kv(bucket)
    watcher = await kv.watch(">")
    me = asyncio.current_task()
    try:
        while not stop.is_set():
            if me is not None and me.cancelling():
                raise asyncio.CancelledError  # nats-py may turn a cancellation into a timeout
            try:
                entry = await watcher.updates(timeout=1.0)
            except TimeoutError:
                continue
            except Exception as exc:
                if "timeout" in type(exc).__name__.lower():
                    continue
                raise
            if entry is None:
                on_complete()
                continue
            if entry.operation in DELETES:
                apply(entry.key, None)
            else:
                apply(entry.key, entry.value)
    finally:
        try:
            await watcher.stop()
        except Exception:
            pass


class Watcher:
    """Runs the route and registry watches of one node, resyncing after reconnects."""

    def __init__(self, bus: Bus, table: RouteTable, registry: Registry) -> None:
        self.bus = bus
        self.table = table
        self.registry = registry
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            self.bus.reconnected.clear()
            stop = asyncio.Event()
            fresh_table = RouteTable()
            fresh_registry = Registry()
            live = {"table": fresh_table, "registry": fresh_registry}
            done = {"routes": False, "registry": False}

            def apply_route(key: str, value: bytes | None) -> None:
                table: RouteTable = live["table"]  # type: ignore[assignment]
                if value is None:
                    table.delete(key)
                    return
                try:
                    table.put(key, Route.model_validate_json(value))
                except ValueError:
                    log.warning("ignoring malformed route %s", key)

            def apply_replica(key: str, value: bytes | None) -> None:
                reg: Registry = live["registry"]  # type: ignore[assignment]
                if value is None:
                    reg.delete(key)
                    return
                try:
                    reg.put(key, RegistryEntry.model_validate_json(value))
                except ValueError:
                    log.warning("ignoring malformed registry entry %s", key)

            def routes_complete() -> None:
                if not done["routes"]:
                    done["routes"] = True
                    # swap in the complete table, then keep applying changes to the live one
                    self.table.__dict__.update(fresh_table.__dict__)
                    live["table"] = self.table
                    self.ready.set()
                    log.info("route table loaded: %d routes", len(self.table))

            def registry_complete() -> None:
                if not done["registry"]:
                    done["registry"] = True
                    self.registry.replace(fresh_registry)
                    live["registry"] = self.registry

            tasks = [
                asyncio.create_task(_follow(self.bus, self.bus.names.routes_bucket, apply_route, routes_complete, stop)),
                asyncio.create_task(_follow(self.bus, self.bus.names.registry_bucket, apply_replica, registry_complete, stop)),
                asyncio.create_task(self.bus.reconnected.wait()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.set()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for t in tasks[:2]:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    log.warning("watch failed (%r); resyncing", t.exception())
            log.info("resyncing route table and registry")
            await asyncio.sleep(0.2)
