"""The §6.1 invariants (reliability-security.md), checked from outside a running fleethub.

Usage::

    oracle = Oracle(settings, engine, [ProxyNode("proxy-0", port, api_port), ...])  # FaultStack makes one
    findings = await oracle.check()            # what differs now, as data ([] when everything agrees)
    await oracle.converged(timeout=10)         # poll until check() is empty; else AssertionError
    real = await oracle.lasting(checks=2)      # findings present in every one of `checks` checks (soak)

What it compares, each as a set read at the time of the check:

- (a) **processes**: the user-server processes that are ours (descendants of this test process whose
  environment carries `JUPYTERHUB_SERVICE_PREFIX=`; the spawn is recognised by its server token,
  derived from the hub key and the spawn id) against the servers whose `server_states.status` is running:
  exactly one process per running server, of that spawn, listening on the target's port; none for
  any other server.
- (b) **routes**: every `user.*` key of the routes bucket belongs to a running server, with its target and
  spawn id; every running server has its route.
- (c) **proxy nodes**: every live node's table (its route API, `GET /api/routes`) has exactly the user routes
  of the bucket, with the same targets; with `reach`, `<prefix>api` of every running server answers 200
  from that server (its JSON names the user) through every live node.
- (d) **stuck**: no server pending or stopping without a live lease (`lease_expires` ≤ the database's now).
- (e) **desired**: `servers.desired` running ⇒ actual running of that spawn or a recorded failure;
  desired stopped ⇒ not running.
- **exactly once** (with an `EventLog`): no spawn id announced `server.ready` twice.

`check(settled=True)` (the default, what `converged` uses) also reports work in flight (a server pending
or stopping under a live lease, the process of a spawn still pending): converged means nothing is moving.
`settled=False` leaves those out: what a periodic check (the soak's) should count as broken.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.shared.bus import Bus
from fleethub.shared.db.migrate import load_secret_key
from fleethub.shared.events import Route
from fleethub.shared.lifecycle import ACTIVE, DesiredState, ServerStatus
from fleethub.shared.names import server_prefix
from fleethub.shared.security import server_token
from fleethub.shared.settings import ServiceSettings

T = 10.0
RUNNING = ServerStatus.RUNNING
IN_FLIGHT = frozenset({ServerStatus.PENDING, ServerStatus.STOPPING})


@dataclass
class ProxyNode:
    """A proxy node the oracle checks: its public port and route-API port; `alive()` false leaves it out
    (a node a test killed for good)."""

    name: str
    port: int
    api_port: int
    alive: Callable[[], bool] = field(default=lambda: True)


@dataclass(frozen=True)
class Finding:
    """One difference: which invariant, about which server (`user/name`) or node, and what differs."""

    invariant: str  # "a.processes", "b.routes", "c.proxy", "d.stuck", "e.desired", "exactly-once", "in-flight"
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.subject}: {self.detail}"


@dataclass(frozen=True)
class UserProcess:
    """A user-server process found in /proc."""

    pid: int
    user: str
    server_name: str
    port: int | None
    token: str
    stopped: bool  # SIGSTOPped (state T)

    @property
    def key(self) -> tuple[str, str]:
        return (self.user, self.server_name)


@dataclass
class Snapshot:
    """What one check read (for a failure message, or for a test to look at)."""

    states: dict[tuple[str, str], dict[str, Any]]
    desired: dict[tuple[str, str], dict[str, Any]]
    processes: list[UserProcess]
    routes: dict[tuple[str, str], Route]
    tables: dict[str, dict[str, str] | str]  # node → {path: target}, or why it could not be read
    secret_key: str

    @property
    def running(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {k: s for k, s in self.states.items() if s["status"] == RUNNING}


def _label(key: tuple[str, str]) -> str:
    return f"{key[0]}/{key[1]}"


def _port(url: str | None) -> int | None:
    if not url:
        return None
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _descends_from(pid: int, root: int) -> bool:
    """Whether `root` is an ancestor of `pid` (user servers are children of a worker, or re-parented
    to this test process, the subreaper, once their worker died)."""
    seen = 0
    while pid > 1 and seen < 64:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == root:
            return True
        seen += 1
    return False


def user_processes(root: int | None = None) -> list[UserProcess]:
    """The user-server processes below `root` (default: this process), zombies left out."""
    root = os.getpid() if root is None else root
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            raw = (entry / "environ").read_bytes()
            if b"JUPYTERHUB_SERVICE_PREFIX=" not in raw:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state in ("Z", "X") or not _descends_from(pid, root):
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
        if "JUPYTERHUB_USER" not in env or env.get("JUPYTERHUB_SERVICE_NAME"):
            continue  # a hub-managed service, not a user server
        out.append(UserProcess(pid, env["JUPYTERHUB_USER"], env.get("JUPYTERHUB_SERVER_NAME", ""),
                               _port(env.get("JUPYTERHUB_SERVICE_URL")), env.get("JUPYTERHUB_API_TOKEN", ""),
                               state == "T"))
    return out


class Oracle:
    """Checks one fleethub's invariants from outside (database, /proc, the routes bucket, proxy nodes)."""

    def __init__(self, settings: ServiceSettings, engine: AsyncEngine, nodes: list[ProxyNode], *,
                 root_pid: int | None = None, reach: bool = True) -> None:
        self.settings = settings
        self.engine = engine
        self.nodes = nodes  # shared with the stack: nodes it starts later are checked too
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self.reach = reach
        self.events: Any = None  # an EventLog, for the exactly-once check
        self._bus: Bus | None = None
        self._secret_key: str | None = None
        self.last: Snapshot | None = None

    async def close(self) -> None:
        """Close the oracle's NATS connection."""
        if self._bus is not None:
            await self._bus.close()
            self._bus = None

    async def bus(self) -> Bus:
        """The oracle's own NATS connection (anonymous), opened on first use: a test may write through it
        (a stray route, say) to see what the oracle reports."""
        if self._bus is None:
            bus = Bus(self.settings.nats_url, self.settings.nats_namespace, "faults-oracle")
            await bus.connect()
            self._bus = bus
        return self._bus

    async def routes(self) -> dict[tuple[str, str], Route]:
        """The user routes of the routes bucket, by (user, server name)."""
        snapshot = await (await self.bus()).routes.snapshot()
        return {(r.data.get("user", ""), r.data.get("server_name", "")): r
                for key, r in snapshot.items() if key.startswith("user.")}

    async def _database(self) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
        async with self.engine.connect() as conn:
            states = (await conn.execute(text(
                "SELECT *, (lease_expires IS NOT NULL AND lease_expires > now()) AS lease_live FROM server_states"
            ))).mappings().all()
            desired = (await conn.execute(text(
                "SELECT u.name AS user_name, s.name AS server_name, s.desired, s.spawn_id "
                "FROM servers s JOIN users u ON u.id = s.user_id"
            ))).mappings().all()
        return ({(r["user_name"], r["server_name"]): dict(r) for r in states},
                {(r["user_name"], r["server_name"]): dict(r) for r in desired})

    async def _table(self, client: httpx.AsyncClient, node: ProxyNode) -> dict[str, str] | str:
        token = self.settings.proxy.auth_token
        headers = {"Authorization": f"token {token.get_secret_value()}"} if token else {}
        try:
            r = await client.get(f"http://127.0.0.1:{node.api_port}/api/routes", headers=headers)
        except httpx.HTTPError as exc:
            return f"route API did not answer ({exc!r})"
        if r.status_code != 200:
            return f"route API answered {r.status_code}: {r.text[:200]}"
        return {path: entry["target"] for path, entry in r.json().items() if path.startswith("/user/")}

    async def snapshot(self) -> Snapshot:
        """Read everything once."""
        if self._secret_key is None:
            configured = self.settings.secret_key
            self._secret_key = configured.get_secret_value() if configured else await load_secret_key(self.engine)
        states, desired = await self._database()
        processes = user_processes(self.root_pid)
        routes = await self.routes()
        async with httpx.AsyncClient(timeout=5) as client:
            live = [n for n in self.nodes if n.alive()]
            tables = dict(zip([n.name for n in live], await asyncio.gather(*(self._table(client, n) for n in live)),
                              strict=True))
        self.last = Snapshot(states, desired, processes, routes, tables, self._secret_key)
        return self.last

    async def check(self, *, settled: bool = True) -> list[Finding]:
        """Every invariant that does not hold now (see the module docstring); [] when all hold."""
        snap = await self.snapshot()
        findings = [*_processes(snap, settled), *_routes(snap), *_tables(snap), *_stuck(snap, settled),
                    *_desired(snap, settled), *self._exactly_once()]
        if self.reach and not any(f.invariant == "c.proxy" for f in findings):
            findings += await self._reachable(snap)
        return findings

    def _exactly_once(self) -> list[Finding]:
        if self.events is None:
            return []
        return [Finding("exactly-once", spawn_id, f"server.ready published {n} times")
                for spawn_id, n in self.events.ready_counts().items() if n > 1]

    async def _reachable(self, snap: Snapshot) -> list[Finding]:
        out = []
        live = [n for n in self.nodes if n.alive()]
        async with httpx.AsyncClient(timeout=5) as client:
            for key in sorted(snap.running):
                for node in live:
                    url = f"http://127.0.0.1:{node.port}{server_prefix(*key)}api"
                    try:
                        r = await client.get(url)
                        body = r.json() if r.status_code == 200 else {}
                    except (httpx.HTTPError, ValueError) as exc:
                        out.append(Finding("c.proxy", _label(key), f"{node.name}: {url} failed: {exc!r}"))
                        continue
                    if r.status_code != 200 or body.get("user") != key[0]:
                        out.append(Finding("c.proxy", _label(key),
                                           f"{node.name}: {url} answered {r.status_code} {r.text[:120]!r}"))
        return out

    async def converged(self, timeout: float = T, interval: float = 0.25) -> Snapshot:
        """Poll `check()` until it finds nothing; returns the last snapshot.

        Raises:
            AssertionError: still findings after `timeout` seconds; the message lists each one, grouped
                by invariant, with the sets that differ.
        """
        deadline = time.monotonic() + timeout
        while True:
            findings = await self.check()
            if not findings:
                assert self.last is not None
                return self.last
            if time.monotonic() >= deadline:
                raise AssertionError(report(findings, self.last, timeout))
            await asyncio.sleep(interval)

    async def lasting(self, checks: int = 2, gap: float = 1.0, *, settled: bool = False) -> list[Finding]:
        """The findings present in each of `checks` checks `gap` seconds apart (a periodic check's real
        problems: a difference seen once may be a read racing a change)."""
        common = set(await self.check(settled=settled))
        for _ in range(checks - 1):
            if not common:
                break
            await asyncio.sleep(gap)
            common &= set(await self.check(settled=settled))
        return sorted(common, key=str)


def report(findings: list[Finding], snap: Snapshot | None, timeout: float) -> str:
    """An AssertionError message: the findings by invariant, then the sets that were compared."""
    lines = [f"the invariants did not converge within {timeout}s:"]
    for invariant in sorted({f.invariant for f in findings}):
        lines.append(f"  {invariant}:")
        lines += [f"    {f.subject}: {f.detail}" for f in findings if f.invariant == invariant]
    if snap is not None:
        lines.append(f"  running servers: {sorted(_label(k) for k in snap.running)}")
        others = sorted((_label(k), s["status"]) for k, s in snap.states.items() if s["status"] != RUNNING)
        lines.append(f"  other states: {others}")
        lines.append(f"  processes: {sorted((p.user, p.server_name, p.pid, p.port) for p in snap.processes)}")
        lines.append(f"  routes bucket: {sorted((_label(k), r.target) for k, r in snap.routes.items())}")
        for node, table in snap.tables.items():
            lines.append(f"  {node} table: {sorted(table.items()) if isinstance(table, dict) else table}")
    return "\n".join(lines)


def _processes(snap: Snapshot, settled: bool) -> list[Finding]:
    """(a) exactly one process per running server, of its spawn, on its port; none for other servers."""
    out = []
    by_key: dict[tuple[str, str], list[UserProcess]] = {}
    for p in snap.processes:
        by_key.setdefault(p.key, []).append(p)
    for key, state in snap.running.items():
        procs = by_key.get(key, [])
        if len(procs) != 1:
            out.append(Finding("a.processes", _label(key),
                               f"running (spawn {state['spawn_id']}) with {len(procs)} processes: "
                               f"{[p.pid for p in procs]}"))
            continue
        p = procs[0]
        if p.token != server_token(snap.secret_key, state["spawn_id"]):
            out.append(Finding("a.processes", _label(key),
                               f"process {p.pid} is not of the running spawn {state['spawn_id']}"))
        if p.port != _port(state["target"]):
            out.append(Finding("a.processes", _label(key),
                               f"process {p.pid} listens on {p.port}, the target is {state['target']}"))
    for key, procs in by_key.items():
        if key in snap.running:
            continue
        status = snap.states.get(key, {}).get("status")
        if status in IN_FLIGHT:
            if settled:
                out.append(Finding("in-flight", _label(key), f"{status}, processes {[p.pid for p in procs]}"))
            continue
        out.append(Finding("a.processes", _label(key),
                           f"orphan processes {[p.pid for p in procs]} (status {status or 'no row'})"))
    return out


def _routes(snap: Snapshot) -> list[Finding]:
    """(b) the bucket's user routes equal the running servers, with their targets and spawn ids."""
    out = []
    for key, route in snap.routes.items():
        state = snap.running.get(key)
        if state is None:
            status = snap.states.get(key, {}).get("status")
            out.append(Finding("b.routes", _label(key),
                               f"route to {route.target} for a server that is not running ({status or 'no row'})"))
        elif route.target != state["target"] or (route.spawn_id and route.spawn_id != state["spawn_id"]):
            out.append(Finding("b.routes", _label(key),
                               f"route {route.target} (spawn {route.spawn_id}) but the server runs at "
                               f"{state['target']} (spawn {state['spawn_id']})"))
    for key in snap.running.keys() - snap.routes.keys():
        out.append(Finding("b.routes", _label(key), f"running at {snap.running[key]['target']} without a route"))
    return out


def _tables(snap: Snapshot) -> list[Finding]:
    """(c) every live node's user routes equal the bucket's."""
    want = {server_prefix(*key).rstrip("/"): r.target for key, r in snap.routes.items()}
    out = []
    for node, table in snap.tables.items():
        if isinstance(table, str):
            out.append(Finding("c.proxy", node, table))
            continue
        if table != want:
            only_node = sorted(set(table.items()) - set(want.items()))
            only_kv = sorted(set(want.items()) - set(table.items()))
            out.append(Finding("c.proxy", node, f"table differs: only on the node {only_node}; "
                                                f"only in the bucket {only_kv}"))
    return out


def _stuck(snap: Snapshot, settled: bool) -> list[Finding]:
    """(d) pending/stopping only under a live lease (and, settled, not at all)."""
    out = []
    for key, state in snap.states.items():
        if state["status"] not in IN_FLIGHT:
            continue
        if not state["lease_live"]:
            out.append(Finding("d.stuck", _label(key), f"{state['status']} (spawn {state['spawn_id']}) with no "
                                                      f"live lease (worker {state['worker_id']}, "
                                                      f"expired {state['lease_expires']})"))
        elif settled:
            out.append(Finding("in-flight", _label(key), f"{state['status']} under {state['worker_id']}'s lease"))
    return out


def _desired(snap: Snapshot, settled: bool) -> list[Finding]:
    """(e) desired running ⇒ that spawn running or failed; desired stopped ⇒ not running."""
    out = []
    for key, want in snap.desired.items():
        state = snap.states.get(key)
        status = state["status"] if state else None
        if want["desired"] == DesiredState.RUNNING:
            if state is None or state["spawn_id"] != want["spawn_id"]:
                if settled:
                    out.append(Finding("e.desired", _label(key), f"desired running (spawn {want['spawn_id']}); "
                                       f"actual: {status} of spawn {state['spawn_id'] if state else None}"))
            elif status == ServerStatus.STOPPED or (status in IN_FLIGHT and settled):
                out.append(Finding("e.desired", _label(key), f"desired running, actual {status}"))
        elif status == RUNNING:
            out.append(Finding("e.desired", _label(key), f"desired {want['desired']}, actual running"))
        elif status in IN_FLIGHT and settled:
            out.append(Finding("e.desired", _label(key), f"desired {want['desired']}, actual {status}"))
    for key, state in snap.states.items():
        if key not in snap.desired and state["status"] in ACTIVE:
            out.append(Finding("e.desired", _label(key), f"{state['status']} with no servers row"))
    return out
