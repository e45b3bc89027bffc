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

from sqlalchemy import text

from fleethub.shared.events import Route
from fleethub.shared.names import server_prefix
from tests.support.oracle import Finding, Oracle, ProxyNode, _label

__all__ = ["Finding", "ProxyNode", "RouteMirror", "SoakOracle", "finding_key"]

ROWS = "SELECT user_name, server_name, spawn_id, status, updated FROM server_states"


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

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.nc.close()


class SoakOracle(Oracle):
    """The harness's oracle with the routes bucket read from a `RouteMirror`, and its findings filtered of reads
    that raced the churn.

    The harness lists the bucket's keys at every check, and each listing leaves a consumer on the routes
    stream until the server drops it; the soak counts those consumers, so its oracle must not add any.

    The harness reads the database, /proc, the bucket and the nodes one after the other, which under churn (and
    on a loaded machine, where the reads take seconds) sees a server in two states. So a finding about a server
    is kept only if the server's row is the same in a second read of the database after the others, and a
    node's route counts as wrong only if it differs from the bucket both before and after the node was asked;
    node findings are split per route, so that a different route differing at the next check is another
    finding rather than the same one lasting.
    """

    def __init__(self, mirror: RouteMirror, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mirror = mirror

    async def check(self, *, settled: bool = True) -> list[Finding]:
        findings = await super().check(settled=settled)
        snap = self.last
        assert snap is not None
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(ROWS))).all()
        now = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
        then = {k: (s["spawn_id"], s["status"], s["updated"]) for k, s in snap.states.items()}
        changed = {_label(k) for k in now.keys() | then.keys() if now.get(k) != then.get(k)}
        kept = [f for f in findings if f.invariant != "c.proxy" and f.subject not in changed]
        before = {server_prefix(*k).rstrip("/"): r.target for k, r in snap.routes.items()}
        after = {server_prefix(*k).rstrip("/"): r.target for k, r in (await self._routes()).items()}
        for node, table in snap.tables.items():
            if isinstance(table, str):
                kept.append(Finding("c.proxy", node, table))
                continue
            for path in sorted(table.keys() | before.keys() | after.keys()):
                if table.get(path) != before.get(path) and table.get(path) != after.get(path):
                    kept.append(Finding("c.proxy", f"{node} {path}",
                                        f"node {table.get(path)}, bucket {after.get(path)}"))
        return kept

    async def _routes(self) -> dict[tuple[str, str], Route]:
        out = {}
        for key, value in self.mirror.routes.items():
            if key.startswith("user."):
                route = Route.model_validate(value)
                out[(route.data.get("user", ""), route.data.get("server_name", ""))] = route
        return out
