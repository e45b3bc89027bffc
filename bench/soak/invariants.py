"""The soak's oracle: the database, the user-server processes, the routes bucket and every proxy node's table
compared, returning findings (never asserting).

The four sources cannot be read at one instant while the churn runs, so a finding about a server counts only
if that server's row is the same in a second read of the database taken after the others (same spawn,
status and update time); a proxy node's route counts as wrong only if it differs from the bucket both
before and after the node was asked. What is left is either a real divergence or one that lasts: the caller
tells the two apart by how long a finding persists (`tracker.Tracker`).

Invariants (reliability-security.md §6.1, "No orphan" and "Exactly once"):
- a server `running` in the database has exactly one live process, the one its state names;
- every user-server process belongs to a server that is running, pending or stopping in the database;
- the bucket holds a route for every running server, to its target, and no other user route;
- every proxy node's table equals the bucket.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from fleethub.shared.names import server_prefix

ACTIVE = ("running", "pending", "stopping")
ROW_SQL = "SELECT user_name, server_name, spawn_id, status, target, state, updated FROM server_states"


@dataclass(frozen=True)
class Finding:
    """One broken invariant: `kind` (what is wrong) about `subject` (a server or a route), with `detail`."""

    kind: str
    subject: str
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}: {self.subject}"


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


class Oracle:
    """Reads every source and returns the findings (`check()`)."""

    def __init__(self, database_url: str, mirror: RouteMirror, proxy_api_ports: list[int], token: str,
                 processes: Any) -> None:
        self.dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.mirror = mirror
        self.proxy_api_ports = proxy_api_ports
        self.token = token
        self.processes = processes  # () -> {pid: (user, server)}
        self.http = httpx.AsyncClient(timeout=5)

    async def close(self) -> None:
        await self.http.aclose()

    async def _rows(self) -> dict[tuple[str, str], dict[str, Any]]:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            rows = await conn.fetch(ROW_SQL)
        finally:
            await conn.close()
        out = {}
        for r in rows:
            state = r["state"]
            out[(r["user_name"], r["server_name"])] = {
                "spawn_id": r["spawn_id"], "status": r["status"], "target": r["target"],
                "state": json.loads(state) if isinstance(state, str) else (state or {}), "updated": r["updated"]}
        return out

    async def _node_table(self, port: int) -> dict[str, str] | str:
        try:
            r = await self.http.get(f"http://127.0.0.1:{port}/api/routes",
                                    headers={"Authorization": f"token {self.token}"})
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        if r.status_code != 200:
            return f"answered {r.status_code}"
        return {path: model["target"] for path, model in r.json().items()}

    async def check(self) -> tuple[list[Finding], dict[str, Any]]:
        """The findings of one look at everything, and a few counts (servers running, processes, routes)."""
        before = await self._rows()
        bucket_before = self.mirror.user_routes()
        procs = self.processes()
        tables = {port: await self._node_table(port) for port in self.proxy_api_ports}
        bucket_after = self.mirror.user_routes()
        after = await self._rows()
        stable = {k for k, row in after.items() if before.get(k) == row}
        findings: list[Finding] = []
        findings += _process_findings(after, stable, procs)
        findings += _route_findings(after, stable, bucket_before, bucket_after)
        for port, table in tables.items():
            findings += _node_findings(port, table, bucket_before, bucket_after)
        counts = {"running": sum(1 for r in after.values() if r["status"] == "running"),
                  "pending": sum(1 for r in after.values() if r["status"] == "pending"),
                  "processes": len(procs), "routes": len(bucket_after)}
        return findings, counts


def _name(key: tuple[str, str]) -> str:
    return f"{key[0]}/{key[1]}" if key[1] else key[0]


def _process_findings(rows: dict[tuple[str, str], dict[str, Any]], stable: set[tuple[str, str]],
                      procs: dict[int, tuple[str, str]]) -> list[Finding]:
    found = []
    by_server: dict[tuple[str, str], list[int]] = {}
    for pid, key in procs.items():
        by_server.setdefault(key, []).append(pid)
    for key, pids in by_server.items():
        row = rows.get(key)
        if key not in stable and row is not None:
            continue
        if row is None or row["status"] not in ACTIVE:
            found.append(Finding("orphan process", _name(key),
                                 f"pids {sorted(pids)}; database: {row['status'] if row else 'no row'}"))
        elif len(pids) > 1:
            found.append(Finding("more than one process", _name(key), f"pids {sorted(pids)}"))
        elif row["status"] == "running" and row["state"].get("pid") not in pids:
            found.append(Finding("process is not the one the state names", _name(key),
                                 f"pids {pids}, state {row['state'].get('pid')}"))
    for key, row in rows.items():
        if key in stable and row["status"] == "running" and key not in by_server:
            found.append(Finding("running without a process", _name(key), f"state {row['state']}"))
    return found


def _route_findings(rows: dict[tuple[str, str], dict[str, Any]], stable: set[tuple[str, str]],
                    before: dict[str, str], after: dict[str, str]) -> list[Finding]:
    found = []
    running = {}
    settled = set()
    for key, row in rows.items():
        spec = server_prefix(*key).rstrip("/")
        if key in stable:
            settled.add(spec)
        if row["status"] == "running":
            running[spec] = (key, row)
    for spec, (key, row) in running.items():
        if spec not in settled:
            continue
        if spec not in before and spec not in after:
            found.append(Finding("running without a route", _name(key)))
        elif after.get(spec) != row["target"] and before.get(spec) != row["target"]:
            found.append(Finding("route target differs from the database", _name(key),
                                 f"route {after.get(spec)}, database {row['target']}"))
    for spec in after.keys() & before.keys():
        if spec.startswith("/user/") and spec not in running and (spec in settled or not _known(spec, rows)):
            found.append(Finding("route of a server not running", spec, f"target {after[spec]}"))
    return found


def _known(spec: str, rows: dict[tuple[str, str], dict[str, Any]]) -> bool:
    return any(server_prefix(*k).rstrip("/") == spec for k in rows)


def _node_findings(port: int, table: dict[str, str] | str, before: dict[str, str],
                   after: dict[str, str]) -> list[Finding]:
    if isinstance(table, str):
        return [Finding("proxy node's table unreadable", f"node api :{port}", table)]
    found = []
    for spec in table.keys() | after.keys():
        if table.get(spec) != after.get(spec) and table.get(spec) != before.get(spec):
            found.append(Finding("proxy node differs from the bucket", f"{spec} at node api :{port}",
                                 f"node {table.get(spec)}, bucket {after.get(spec)}"))
    return found
