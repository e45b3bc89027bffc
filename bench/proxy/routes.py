"""Figures of the route table: the route API (3), propagation of a change to every node and a fresh node's
start (4), memory with 0 and with N routes (5); pollers find and watch every serving process of a node."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from typing import Any

from common import HOST, MIB, REQUEST_TIMEOUT, Proxy, get_once, pct, say, stop_tasks, user_path
from harness import Harness
from proctree import BenchError, rss_bytes, sample_tree, tcp_sockets
from wire import HttpConn, WireError


class RouteFigures(Harness):
    """The route API, propagation and memory per route, measured on CHP and the main fleethub node."""

    # ---- 5. memory

    def memory_sample(self, px: Proxy, key: str) -> None:
        if not px.proc.alive():
            self.errors.append(f"memory [{px.label}]: {px.proc.failure('is not running')}")
            return
        tree = px.proc.tree()
        per_pid = {pid: rss_bytes(pid) for pid in tree}
        sample = sample_tree(px.proc.pid)
        workers = px.worker_pids()
        self.put("memory", f"{px.key}.{key}", {"node": sum(per_pid.values()), "pss": sample.pss,
                                               "workers": [per_pid.get(w, 0) for w in workers]})
        say(f"  {px.label}: RSS {sum(per_pid.values()) / MIB:.1f} MiB over {len(tree)} processes "
            f"(PSS {sample.pss / MIB:.1f} MiB)")

    # ---- 3. route API

    async def route_api(self, px: Proxy) -> None:
        assert px.api is not None and self.backend_a is not None
        plan = self.plan
        target = f"http://{HOST}:{self.backend_a.port}"

        def data(i: int) -> dict[str, Any]:
            return {"user": f"bench-{i:05d}", "server_name": "", "jupyterhub": True}

        conn = px.api.conn()
        lat = []
        t0 = time.perf_counter()
        for i in range(plan.api_seq):
            t = time.perf_counter()
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await px.api.add(user_path(i), target, data(i), conn)
            lat.append(time.perf_counter() - t)
        seq_s = time.perf_counter() - t0
        conn.close()

        async def clients(start: int, stop: int, n: int) -> float:
            counter = itertools.count(start)

            async def client() -> None:
                c = px.api.conn()  # type: ignore[union-attr]
                try:
                    while (i := next(counter)) < stop:
                        async with asyncio.timeout(REQUEST_TIMEOUT):
                            await px.api.add(user_path(i), target, data(i), c)  # type: ignore[union-attr]
                finally:
                    c.close()

            t1 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(n)))
            return time.perf_counter() - t1

        conc_s = await clients(plan.api_seq, plan.api_seq + plan.api_conc, plan.api_clients)
        bulk_s = await clients(plan.api_seq + plan.api_conc, plan.routes, 20)
        res = {
            "seq_routes_per_s": plan.api_seq / seq_s, "seq_p50_ms": pct(lat, 50) * 1000,  # type: ignore[operator]
            "seq_p99_ms": pct(lat, 99) * 1000,  # type: ignore[operator]
            "conc_routes_per_s": plan.api_conc / conc_s,
            "bulk_routes_per_s": (plan.routes - plan.api_seq - plan.api_conc) / bulk_s if bulk_s > 0 else None,
        }
        self.put("route_api", px.key, res)
        say(f"  {px.label}: sequential {res['seq_routes_per_s']:.0f}/s (p50 {res['seq_p50_ms']:.2f} ms, "
            f"p99 {res['seq_p99_ms']:.2f} ms); {plan.api_clients} clients {res['conc_routes_per_s']:.0f}/s")

    async def bench_routes(self, px: Proxy) -> None:
        """The benchmark's own routes, then a check that the table is complete and routes answer."""
        assert px.api is not None and self.backend_a is not None
        a = f"http://{HOST}:{self.backend_a.port}"
        for path, target in (("/bench/ws/", a), ("/bench/nows/", a), ("/bench/prop/", a),
                             ("/bench/dead/", f"http://{HOST}:{self.dead_port}")):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await px.api.add(path, target)
        want = self.plan.routes + 4
        deadline = time.perf_counter() + 60
        while True:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                have = len(await px.api.routes())
            if have >= want:
                break
            if time.perf_counter() > deadline:
                raise BenchError(f"{px.label}: GET /api/routes lists {have} routes, expected {want}")
            await asyncio.sleep(0.1)
        px.api.close()
        for path in (user_path(0) + "1k", user_path(self.plan.routes - 1) + "1k", "/bench/prop/1k"):
            r = await get_once(px.port, path)
            if r.status != 200 or r.headers.get("x-backend") != "A":
                raise BenchError(f"{px.label}: GET {path} answered {r.status} {r.body[:200]!r}, not backend A")
        say(f"  {px.label}: {have} routes listed; routes answer")

    # ---- 4. propagation

    async def propagation(self) -> None:
        nodes: list[Proxy] = []
        if self.fh is not None:
            nodes = [self.fh] + ([self.fh1] if self.fh1 is not None else [])
            while len(nodes) < 3:
                node = await self.attempt("start fleethub node for propagation (1 worker)",
                                          self.start_fleethub(1, with_api=False, check_path="/bench/prop/1k"))
                if node is None:
                    break
                nodes.append(node)
        groups = {"chp": [self.chp] if self.chp is not None else [], "fh": nodes}
        pairs = [("chp", self.chp), ("fh", self.fh)]
        self.turn += 1
        if self.turn % 2 == 0:
            pairs.reverse()
        for key, px in pairs:
            if px is None or not groups[key]:
                continue
            res = await self.attempt(f"propagation [{px.label}]", self.propagate(px, groups[key]))
            if res is not None:
                self.put("propagation", key, res)
        if self.fh is not None and nodes:
            res = await self.attempt("fresh fleethub node start", self.fresh_node())
            if res is not None:
                self.put("propagation", "fh.fresh_node_s", res)
        for node in nodes:
            if node not in (self.fh, self.fh1):
                self.stop_proc(node.proc)

    async def propagate(self, px: Proxy, nodes: list[Proxy]) -> dict[str, Any]:
        assert px.api is not None and self.backend_a is not None and self.backend_b is not None
        targets = {"A": f"http://{HOST}:{self.backend_a.port}", "B": f"http://{HOST}:{self.backend_b.port}"}
        path = "/bench/prop/1k"
        notify = asyncio.Event()
        pollers: list[Poller] = []
        for node in nodes:
            pollers += await pollers_for(node, path, notify)
        tasks = [asyncio.create_task(p.run()) for p in pollers]
        api_conn = px.api.conn()
        lat: list[float] = []
        api_lat: list[float] = []
        timeouts = 0
        try:
            current = "A"
            async with asyncio.timeout(30):  # every poller sees the starting backend
                while not all(p.backend == current for p in pollers):
                    notify.clear()
                    await notify.wait()
            for _ in range(self.plan.changes):
                want = "B" if current == "A" else "A"
                t0 = time.perf_counter()
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await px.api.add("/bench/prop/", targets[want], None, api_conn)
                api_lat.append(time.perf_counter() - t0)
                try:
                    async with asyncio.timeout(10):
                        while not all(p.sent >= t0 and p.backend == want for p in pollers):
                            notify.clear()
                            await notify.wait()
                    lat.append(time.perf_counter() - t0)
                except TimeoutError:
                    timeouts += 1
                    stale = [f"{p.label}: {p.backend}" for p in pollers if p.backend != want]
                    say(f"  ! {px.label}: change to {want} not seen within 10 s by {stale}")
                    if timeouts >= 3:
                        raise BenchError(f"{px.label}: 3 route changes not propagated within 10 s") from None
                current = want
                await asyncio.sleep(random.uniform(0.01, 0.03))
        finally:
            for p in pollers:
                p.stopped = True
            await stop_tasks(tasks)
            for p in pollers:
                p.conn.close()
            api_conn.close()
        if current != "A":  # leave the route on A
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await px.api.add("/bench/prop/", targets["A"])
            px.api.close()
        res = {"p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000, "max_ms": max(lat) * 1000,  # type: ignore[operator]
               "api_p50_ms": pct(api_lat, 50) * 1000, "changes": len(lat), "timeouts": timeouts,  # type: ignore[operator]
               "nodes": len(nodes), "connections": len(pollers), "polls": sum(p.polls for p in pollers)}
        say(f"  {px.label}: {len(nodes)} node(s), {len(pollers)} polled connections: API POST → all answer "
            f"B/A: p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, max {res['max_ms']:.1f} ms "
            f"(POST alone p50 {res['api_p50_ms']:.1f} ms)")
        return res

    async def fresh_node(self) -> float:
        """exec of a new node → health check 200 and a route answering, with every route in the bucket."""
        node, _ = self.spawn_fleethub(1, with_api=False)
        try:
            async def serving() -> bool:
                if (await get_once(node.port, "/_chp_healthz")).status != 200:
                    return False
                return (await get_once(node.port, "/bench/prop/1k")).headers.get("x-backend") == "A"

            t = await self.wait_for(node.proc, "served its routes", serving, every=0.005)
        finally:
            self.stop_proc(node.proc)
        say(f"  fresh fleethub node with {self.plan.routes} routes: exec → serving in {t:.2f} s "
            f"(CHP starts empty: {self.results.get('chp_start_s', float('nan')):.2f} s to answer, no routes)")
        return t


class Poller:
    """One keep-alive connection polling a path continuously; remembers the newest answer's backend."""

    def __init__(self, conn: HttpConn, path: str, notify: asyncio.Event, label: str) -> None:
        self.conn = conn
        self.path = path
        self.notify = notify
        self.label = label
        self.sent = 0.0  # when the request of the newest answer was sent
        self.backend = ""
        self.polls = 0
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            t = time.perf_counter()
            try:
                async with asyncio.timeout(10):
                    r = await self.conn.request("GET", self.path)
                backend = r.headers.get("x-backend") or f"status {r.status}"
            except (WireError, OSError, TimeoutError) as exc:
                backend = f"error {type(exc).__name__}"
                await asyncio.sleep(0.01)
            self.sent, self.backend = t, backend
            self.polls += 1
            self.notify.set()


async def pollers_for(node: Proxy, path: str, notify: asyncio.Event) -> list[Poller]:
    """One polling connection per serving process of `node` (found from the socket's owner in /proc)."""
    workers = set(node.worker_pids())
    owner_of: dict[int, int] = {}
    for pid in workers:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    owner_of[int(link[8:-1])] = pid
        except OSError:
            continue
    chosen: dict[int, HttpConn] = {}
    spare: list[HttpConn] = []
    for _ in range(16 * len(workers)):
        if len(chosen) == len(workers):
            break
        conn = HttpConn(HOST, node.port)
        async with asyncio.timeout(10):
            await conn.request("GET", path)
        local = conn.local_port
        pid = None
        for _ in range(3):  # the accepted socket's inode, then its owner
            inode = next((s.inode for s in tcp_sockets() if s.local_port == node.port and s.remote_port == local), None)
            if inode is not None:
                pid = owner_of.get(inode)
                if pid is None:  # accepted after we listed the fds: list again
                    for w in workers:
                        try:
                            for fd in os.listdir(f"/proc/{w}/fd"):
                                try:
                                    if os.readlink(f"/proc/{w}/fd/{fd}") == f"socket:[{inode}]":
                                        pid = w
                                except OSError:
                                    pass
                        except OSError:
                            pass
            if pid is not None:
                break
            await asyncio.sleep(0.01)
        if pid is not None and pid not in chosen:
            chosen[pid] = conn
        else:
            spare.append(conn)
    for conn in spare:
        conn.close()
    if len(chosen) < len(workers):
        raise BenchError(f"{node.label}: could not reach every worker ({len(chosen)} of {len(workers)} "
                         f"after {16 * len(workers)} connections)")
    return [Poller(c, path, notify, f"{node.label} pid {pid}") for pid, c in chosen.items()]
