"""The soak's oracle: the fault harness's (`tests/support/oracle.py`, the §6.1 invariants: processes, routes
bucket, every proxy node's table, stuck leases, desired against actual) in its non-asserting form, reading the
routes bucket from one watcher held for the whole run.

`Oracle.check(settled=False)` returns the findings of one look, leaving work in flight out; whether a finding
is transient (a read racing the churn, a kill being healed) or persistent is decided by how long it lasts
(`tracker.Tracker`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: tests.support

from fleethub.shared.events import Route
from tests.support.oracle import Finding, Oracle, ProxyNode

__all__ = ["Finding", "ProxyNode", "RouteMirror", "SoakOracle", "finding_key"]


def finding_key(f: Finding) -> str:
    """What identifies a finding across checks (its detail, naming pids and ports, may change)."""
    return f"[{f.invariant}] {f.subject}"


class RouteMirror:
    """The routes bucket, followed by one KV watcher for the whole run.

    One long-lived watcher rather than a key listing per check: every listing makes a consumer on the routes
    stream, and the soak counts consumers.
    """

    def __init__(self, nats_url: str, bucket: str) -> None:
        self.nats_url = nats_url
        self.bucket = bucket
        self.routes: dict[str, dict[str, Any]] = {}
        self.loaded = asyncio.Event()
        self.nc = NATS()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.nc.connect(self.nats_url, name="soak-oracle", max_reconnect_attempts=-1)
        kv: KeyValue = await self.nc.jetstream().key_value(self.bucket)
        watcher = await kv.watchall()
        self._task = asyncio.create_task(self._follow(watcher))
        await asyncio.wait_for(self.loaded.wait(), 30)

    async def _follow(self, watcher: Any) -> None:
        async for entry in watcher:
            if entry is None:  # the initial values are all in
                self.loaded.set()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.routes.pop(entry.key, None)
            else:
                self.routes[entry.key] = json.loads(entry.value)
        self.loaded.set()

    def user_routes(self) -> dict[str, str]:
        """routespec (no trailing slash) → target, of every route in the bucket."""
        return {r["routespec"].rstrip("/") or "/": r["target"] for r in self.routes.values()}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.nc.close()


class SoakOracle(Oracle):
    """The harness's oracle with the routes bucket read from a `RouteMirror`.

    The harness lists the bucket's keys at every check, and each listing leaves a consumer on the routes
    stream until the server drops it; the soak counts those consumers, so its oracle must not add any.
    """

    def __init__(self, mirror: RouteMirror, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mirror = mirror

    async def _routes(self) -> dict[tuple[str, str], Route]:
        out = {}
        for key, value in self.mirror.routes.items():
            if key.startswith("user."):
                route = Route.model_validate(value)
                out[(route.data.get("user", ""), route.data.get("server_name", ""))] = route
        return out
