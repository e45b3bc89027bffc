"""fleethub's proxy against configurable-http-proxy 5.x (CHP), side by side in one run, same backend.

Starts a fast backend (bench/proxy/backend.py, two instances A and B), CHP (installed with npm
into a cache directory on first use), an embedded NATS server and fleethub proxy nodes
(`python -m fleethub run proxy`), then measures, alternating the order of the two proxies:

 1. wrk throughput and latency (1 KiB and 1 MiB bodies, 32 and 256 connections; 1 connection for
    the latency one hop adds) and the proxy's CPU time per request;
 2. websocket echo throughput (16 × 500) and round-trip time (1 × 2,000);
 3. the route API: sequential and concurrent route additions;
 4. route propagation to every node (3 fleethub nodes) with 10,000 routes, and how long a fresh
    node takes to serve them;
 5. memory with 0 and with 10,000 routes;
 6. a soak of websocket churn and requests to a dead target: RSS, fds and sockets before/after.

Prints a markdown table (direct | CHP | fleethub | fleethub/CHP). Needs node/npm and wrk.

    python bench/proxy/run.py [--quick] [--duration S] [--soak S] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleethub.shared.net import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import loadgen
from figures import fmt
from loadgen import WrkResult, run_wrk, wrk_binary
from proctree import BenchError, Proc, cpu_seconds, established_to, rss_bytes, sample_tree, tcp_sockets, until_sigterm
from wire import HttpConn, RouteApi, WireError, WsConn, WsRefused

HOST = "127.0.0.1"
NAMESPACE = "bench"
CHP_SPEC = "configurable-http-proxy@5"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleethub-bench" / "chp"
MIB = 1024 * 1024
PAYLOAD = bytes(random.Random(7).randrange(256) for _ in range(64))
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0


# ---------------------------------------------------------------------------------------------- helpers

def pct(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `xs`, None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def say(text: str) -> None:
    print(text, flush=True)


def user_path(i: int) -> str:
    return f"/user/bench-{i:05d}/"


@dataclass
class Plan:
    """What to run, from the command line."""

    quick: bool
    duration: float  # seconds of each wrk run
    soak: float  # seconds of soak per proxy
    routes: int  # routes loaded for memory/propagation
    api_seq: int  # sequential route additions timed
    api_conc: int  # concurrent route additions timed
    api_clients: int
    changes: int  # route changes timed for propagation
    ws_conns: int = 16
    ws_msgs: int = 500
    ws_rtt: int = 2000
    warmup: float = 1.0
    idle: float = 5.0  # idle seconds before the soak's last sample

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        if args.quick:
            plan = cls(quick=True, duration=2, soak=20, routes=2000, api_seq=500, api_conc=500, api_clients=10,
                       changes=40, idle=3.0)
        else:
            plan = cls(quick=False, duration=10, soak=60, routes=10_000, api_seq=2000, api_conc=2000,
                       api_clients=10, changes=200)
        if args.duration is not None:
            plan.duration = args.duration
        if args.soak is not None:
            plan.soak = args.soak
        if args.routes is not None:
            plan.routes = args.routes
        plan.api_seq = min(plan.api_seq, plan.routes // 2)
        plan.api_conc = min(plan.api_conc, plan.routes - plan.api_seq)
        return plan


@dataclass
class Proxy:
    """A proxy under test (or the backend itself, for `direct`)."""

    key: str  # direct | chp | fh | fh1 | …
    label: str
    proc: Proc
    port: int
    api: RouteApi | None = None
    workers: int = 1
    ready_s: float = 0.0  # exec → ready

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.tree())

    def worker_pids(self) -> list[int]:
        """The processes that serve connections: the children of a supervisor, else the process itself."""
        tree = self.proc.tree()
        return tree[1:] if len(tree) > 1 else tree


# ------------------------------------------------------------------------------------------ the benchmark

class Bench:
    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.token = secrets.token_hex(16)
        self.procs: list[Proc] = []
        self.nats: Any = None
        self.results: dict[str, Any] = {"plan": dict(plan.__dict__)}
        self.errors: list[str] = []
        self.backend_a: Proxy | None = None
        self.backend_b: Proxy | None = None
        self.dead_port = 0
        self.chp: Proxy | None = None
        self.fh: Proxy | None = None  # the main fleethub node (2 workers, with the route API)
        self.fh1: Proxy | None = None  # a second node, 1 worker
        self.fh_nodes = 0
        self.turn = 0  # alternates the order of CHP and fleethub

    # ---- processes

    def proc(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, args, self.workdir / f"{name}.log", env=env, cwd=ROOT)
        self.procs.append(p)
        return p.start()

    def cleanup(self) -> None:
        loadgen.stop_all()
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as exc:  # keep stopping the others
                say(f"  ! stopping {p.name}: {exc!r}")
        self.procs.clear()
        if self.nats is not None:
            try:
                self.nats.stop()
            except Exception as exc:
                say(f"  ! stopping nats-server: {exc!r}")
            self.nats = None

    def stop_proc(self, p: Proc) -> None:
        p.stop()
        if p in self.procs:
            self.procs.remove(p)

    async def wait_for(self, proc: Proc, what: str, check: Callable[[], Awaitable[bool]],
                       timeout: float = START_TIMEOUT, every: float = 0.02) -> float:
        """Poll `check` until true; seconds since `proc` was started. Fails naming `proc` if it dies or times out."""
        deadline = time.perf_counter() + timeout
        while True:
            if not proc.alive():
                raise proc.failure(f"exited before it {what}")
            try:
                async with asyncio.timeout(5):
                    if await check():
                        return time.perf_counter() - proc.started
            except (OSError, WireError, TimeoutError, ValueError):
                pass
            if time.perf_counter() > deadline:
                raise proc.failure(f"did not {what} within {timeout:.0f} s")
            await asyncio.sleep(every)

    async def start_backend(self, name: str) -> Proxy:
        port_file = self.workdir / f"backend-{name}.port"
        p = self.proc(f"backend-{name}", [sys.executable, str(HERE / "backend.py"), "--name", name,
                                          "--port-file", str(port_file)])

        async def bound() -> bool:
            return port_file.exists()

        await self.wait_for(p, "listened", bound, timeout=20)
        port = int(port_file.read_text())
        backend = Proxy(f"backend-{name}", f"backend {name}", p, port)
        r = await get_once(port, "/user/x/1k")
        if r.status != 200 or r.headers.get("x-backend") != name or len(r.body) != 1024:
            raise BenchError(f"backend {name} answered wrongly: {r.status} {r.headers}")
        return backend

    async def start_chp(self) -> Proxy:
        port, api_port = free_port(), free_port()
        binary = CACHE / "node_modules" / ".bin" / "configurable-http-proxy"
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": self.token}
        p = self.proc("chp", [str(binary), "--ip", HOST, "--port", str(port), "--api-ip", HOST,
                              "--api-port", str(api_port), "--log-level", "warn"], env)
        api = RouteApi(HOST, api_port, self.token)

        async def ready() -> bool:
            await api.routes()
            return (await get_once(port, "/_chp_healthz")).status == 200

        t = await self.wait_for(p, "answered on its API and port", ready)
        api.close()
        self.results["chp_start_s"] = t
        return Proxy("chp", "CHP", p, port, api)

    def fleethub_env(self, port: int, workers: int, api_port: int | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETHUB_", "CONFIGPROXY_"))}
        env.update(
            FLEETHUB_NATS_URL=self.nats.url, FLEETHUB_NATS_NAMESPACE=NAMESPACE, FLEETHUB_PROXY__HOST=HOST,
            FLEETHUB_PROXY__PORT=str(port), FLEETHUB_PROXY__WORKERS=str(workers), CONFIGPROXY_AUTH_TOKEN=self.token,
            FLEETHUB_LOG_LEVEL="WARNING", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        if api_port is not None:
            env["FLEETHUB_PROXY__API_PORT"] = str(api_port)
        return env

    def spawn_fleethub(self, workers: int, with_api: bool) -> tuple[Proxy, int | None]:
        self.fh_nodes += 1
        port = free_port()
        api_port = free_port() if with_api else None
        name = f"fleethub-node{self.fh_nodes}"
        p = self.proc(name, [sys.executable, "-m", "fleethub", "run", "proxy"],
                      self.fleethub_env(port, workers, api_port))
        api = RouteApi(HOST, api_port, self.token) if api_port is not None else None
        label = f"fleethub node {self.fh_nodes} ({workers} worker{'s' if workers > 1 else ''})"
        return Proxy(f"fh-node{self.fh_nodes}", label, p, port, api, workers), api_port

    async def start_fleethub(self, workers: int, with_api: bool, check_path: str | None = None,
                             expect: str = "A") -> Proxy:
        """Start a node and wait until its health check answers 200 (and `check_path` routes to `expect`)."""
        node, _ = self.spawn_fleethub(workers, with_api)

        async def ready() -> bool:
            if (await get_once(node.port, "/_chp_healthz")).status != 200:
                return False
            if node.api is not None:
                await node.api.routes()
            if check_path is not None:
                return (await get_once(node.port, check_path)).headers.get("x-backend") == expect
            return True

        t = await self.wait_for(node.proc, "answered 200 on /_chp_healthz", ready)
        if node.api is not None:
            node.api.close()
        node.ready_s = t
        return node

    # ---- bookkeeping

    def order(self) -> list[Proxy]:
        """CHP and the main fleethub node, in alternating order."""
        self.turn += 1
        pair = [p for p in (self.chp, self.fh) if p is not None]
        return pair if self.turn % 2 else pair[::-1]

    def put(self, section: str, key: str, value: Any) -> None:
        self.results.setdefault(section, {})[key] = value

    async def attempt(self, what: str, coro: Awaitable[Any]) -> Any:
        """Run one measurement; a failure is recorded and the benchmark goes on."""
        try:
            return await coro
        except Exception as exc:  # any failure of one measurement is reported, the rest goes on
            msg = f"{what}: {type(exc).__name__}: {exc}"
            self.errors.append(msg)
            say(f"  ! {msg}")
            return None

    # ---- the run

    async def run(self) -> None:
        plan = self.plan
        self.results["machine"] = machine_info()
        for k, v in self.results["machine"].items():
            say(f"  {k}: {v}")
        say("\n== setup")
        self.backend_a = await self.start_backend("A")
        self.backend_b = await self.start_backend("B")
        self.dead_port = free_port()
        say(f"  backends A :{self.backend_a.port}, B :{self.backend_b.port}; dead target :{self.dead_port}")
        self.chp = await self.start_chp()
        say(f"  CHP {self.results['machine']['chp']} on :{self.chp.port} (API :{self.chp.api.port}), "  # type: ignore[union-attr]
            f"ready in {self.results['chp_start_s']:.2f} s")
        from fleethub.shared.embedded import EmbeddedNats

        self.nats = EmbeddedNats(self.workdir / "nats", port=None)
        (self.workdir / "nats").mkdir(exist_ok=True)
        self.nats.start()
        say(f"  nats-server on {self.nats.url}")
        self.fh = await self.attempt("start fleethub node (2 workers, route API)",
                                     self.start_fleethub(2, with_api=True))
        if self.fh is not None:
            self.fh.key = "fh"
            say(f"  fleethub node on :{self.fh.port} (API :{self.fh.api.port}), workers {self.fh.worker_pids()}, "  # type: ignore[union-attr]
                f"ready in {self.fh.ready_s:.2f} s")

        say("\n== memory, 0 routes")
        await asyncio.sleep(1.0)
        for px in self.order():
            self.memory_sample(px, "rss0")

        say(f"\n== route API: {plan.api_seq} sequential, {plan.api_conc} with {plan.api_clients} clients, "
            f"then up to {plan.routes} routes")
        for px in self.order():
            await self.attempt(f"route API [{px.label}]", self.route_api(px))
        for px in self.order():
            await self.attempt(f"bench routes [{px.label}]", self.bench_routes(px))

        say(f"\n== memory, {plan.routes} routes")
        await asyncio.sleep(2.0)
        for px in self.order():
            self.memory_sample(px, "rss_routes")

        say("\n== throughput (wrk)")
        if self.fh is not None:
            self.fh1 = await self.attempt("start fleethub node (1 worker)",
                                          self.start_fleethub(1, with_api=False, check_path=user_path(0) + "1k"))
            if self.fh1 is not None:
                self.fh1.key = "fh1"
        await self.throughput()

        say("\n== websocket echo")
        await self.websockets()

        say("\n== route propagation")
        await self.propagation()

        say(f"\n== soak ({plan.soak:.0f} s per proxy)")
        for px in self.order():
            res = await self.attempt(f"soak [{px.label}]", self.soak(px))
            if res is not None:
                self.put("soak", px.key, res)

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

    # ---- 1. throughput

    async def throughput(self) -> None:
        plan = self.plan
        assert self.backend_a is not None
        direct = Proxy("direct", "direct", self.backend_a.proc, self.backend_a.port)
        targets = [direct] + [p for p in (self.chp, self.fh, self.fh1) if p is not None]
        checked = [direct]
        for px in targets[1:]:
            if await self.attempt(f"route check [{px.label}]", self.check_route(px)) is not None:
                checked.append(px)
        targets = checked
        for px in targets:  # warm up (Node's JIT, pools)
            await self.attempt(f"warm-up [{px.label}]",
                               run_wrk(px.url(user_path(0) + "1k"), 2, 32, plan.warmup))
        rows = [("1k", 2, 32), ("1k", 2, 256), ("1m", 2, 32), ("1m", 2, 256), ("1k", 1, 1)]
        for n, (size, threads, conns) in enumerate(rows):
            proxies = targets[1:] if n % 2 == 0 else targets[1:][::-1]
            for px in [direct, *proxies]:
                res = await self.attempt(f"wrk {size} c{conns} [{px.label}]",
                                         self.wrk_once(px, size, threads, conns))
                if res is not None:
                    self.put("wrk", f"{size}.c{conns}.{px.key}", res.__dict__ | {"cpu_us_per_req": res.cpu_us_per_req})

    async def check_route(self, px: Proxy) -> bool:
        r = await get_once(px.port, user_path(0) + "1k")
        if r.status != 200 or r.headers.get("x-backend") != "A":
            raise BenchError(f"GET {user_path(0)}1k answered {r.status} {r.body[:200]!r}")
        return True

    async def wrk_once(self, px: Proxy, size: str, threads: int, conns: int) -> WrkResult:
        px.proc.check()
        pids = px.proc.tree()
        cpu0 = cpu_seconds(pids)
        res = await run_wrk(px.url(user_path(0) + size), threads, conns, self.plan.duration)
        res.cpu_s = cpu_seconds(pids) - cpu0
        px.proc.check()
        bad = f"  [{res.errors} socket errors, {res.non2xx} non-2xx]" if res.errors or res.non2xx else ""
        cpu = res.cpu_us_per_req
        say(f"  {size} c{conns:<3} {px.label:32} {res.rps:>10.0f} req/s  p50 {res.p50_ms:7.2f} ms  "
            f"p99 {res.p99_ms:7.2f} ms  CPU {cpu if cpu is not None else float('nan'):6.1f} µs/req{bad}")
        return res

    # ---- 2. websockets

    async def websockets(self) -> None:
        assert self.backend_a is not None
        direct = Proxy("direct", "direct", self.backend_a.proc, self.backend_a.port)
        for px in [direct, *self.order()]:
            res = await self.attempt(f"websocket echo [{px.label}]", self.ws_echo(px))
            if res is not None:
                self.put("ws", px.key, res)

    async def ws_echo(self, px: Proxy) -> dict[str, float]:
        plan = self.plan
        path = "/bench/ws/echo"
        socks = await asyncio.gather(*(WsConn.open(HOST, px.port, path) for _ in range(plan.ws_conns)))
        try:
            async with asyncio.timeout(30):
                for ws in socks:  # warm-up
                    await ws.echo(PAYLOAD)

            async def run(ws: WsConn) -> None:
                for _ in range(plan.ws_msgs):
                    if await ws.echo(PAYLOAD) != PAYLOAD:
                        raise BenchError("websocket echo returned other bytes")

            t0 = time.perf_counter()
            async with asyncio.timeout(120):
                await asyncio.gather(*(run(ws) for ws in socks))
            rate = plan.ws_conns * plan.ws_msgs / (time.perf_counter() - t0)
        finally:
            for ws in socks:
                ws.abort()
        ws = await WsConn.open(HOST, px.port, path)
        try:
            rtts = []
            async with asyncio.timeout(120):
                for _ in range(50):
                    await ws.echo(PAYLOAD)
                for _ in range(plan.ws_rtt):
                    t = time.perf_counter()
                    if await ws.echo(PAYLOAD) != PAYLOAD:
                        raise BenchError("websocket echo returned other bytes")
                    rtts.append(time.perf_counter() - t)
            await ws.close()
        finally:
            ws.abort()
        res = {"msgs_per_s": rate, "rtt_p50_us": pct(rtts, 50) * 1e6, "rtt_p99_us": pct(rtts, 99) * 1e6}  # type: ignore[operator]
        say(f"  {px.label:32} {plan.ws_conns}×{plan.ws_msgs}: {rate:>8.0f} msg/s   1×{plan.ws_rtt}: "
            f"RTT p50 {res['rtt_p50_us']:.0f} µs, p99 {res['rtt_p99_us']:.0f} µs")
        return res

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

    # ---- 6. soak

    async def soak(self, px: Proxy) -> dict[str, Any]:
        plan = self.plan
        counters: Counter[str] = Counter()
        dead = self.dead_port
        assert self.backend_a is not None
        backend_port = self.backend_a.port
        px.proc.check()
        await asyncio.sleep(1.0)
        start = sample_tree(px.proc.pid, dead)
        start_backend = sample_tree(px.proc.pid, backend_port)
        deadline = time.perf_counter() + plan.soak
        max_dead = 0

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await soak_round(px, counters)
                await asyncio.sleep(0.005)

        async def watch() -> None:
            nonlocal max_dead
            while True:
                max_dead = max(max_dead, established_to(dead))
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        workers = [asyncio.create_task(worker()) for _ in range(4)]
        try:
            await asyncio.sleep(plan.soak / 2)
            middle = sample_tree(px.proc.pid, dead)
            async with asyncio.timeout(plan.soak + 120):
                await asyncio.gather(*workers)
        finally:
            await stop_tasks(workers)
        await asyncio.sleep(plan.idle)
        await stop_tasks([watcher])
        px.proc.check()
        end = sample_tree(px.proc.pid, dead)
        end_backend = sample_tree(px.proc.pid, backend_port)
        res = {
            "start": start.as_dict(), "middle": middle.as_dict(), "end": end.as_dict(),
            "rss_growth_pct": (end.rss - start.rss) / start.rss * 100 if start.rss else None,
            "fd_delta": end.fds - start.fds, "socket_delta": end.sockets - start.sockets,
            "established_to_dead_end": established_to(dead), "established_to_dead_max": max_dead,
            "to_backend_start": start_backend.to_port, "to_backend_end": end_backend.to_port,
            "counters": dict(sorted(counters.items())),
        }
        say(f"  {px.label}: {counters['rounds']} rounds; RSS {start.rss / MIB:.1f} → {middle.rss / MIB:.1f} → "
            f"{end.rss / MIB:.1f} MiB ({res['rss_growth_pct']:+.1f} %); fds {start.fds} → {middle.fds} → {end.fds}; "
            f"sockets {start.sockets} → {end.sockets} {end.states}; "
            f"ESTABLISHED to dead target: {res['established_to_dead_end']} "
            f"(max {max_dead})")
        say(f"    {dict(sorted(counters.items()))}")
        return res


async def stop_tasks(tasks: list[asyncio.Task[Any]], timeout: float = 15.0) -> None:
    """Cancel `tasks` and wait for them to end, at most `timeout` seconds (a swallowed cancel must not hang us)."""
    for t in tasks:
        t.cancel()
    pending = {t for t in tasks if not t.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=timeout)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: no "never retrieved" warnings
    if pending:
        raise BenchError(f"{len(pending)} task(s) did not stop within {timeout:.0f} s of being cancelled")


async def soak_round(px: Proxy, counters: Counter[str]) -> None:
    """One round of churn: 4 websockets (2 closed by us, 2 by the backend dropping its connection),
    upgrades to a dead target and to a server refusing websockets, GETs to the dead target."""
    counters["rounds"] += 1
    socks: list[WsConn] = []
    try:
        for _ in range(4):
            socks.append(await WsConn.open(HOST, px.port, "/bench/ws/soak", timeout=10))
        for ws in socks:
            for _ in range(3):
                async with asyncio.timeout(10):
                    if await ws.echo(PAYLOAD) != PAYLOAD:
                        counters["ws_bad_echo"] += 1
        counters["ws_echoes"] += 3 * len(socks)
        for ws in socks[:2]:
            counters["ws_closed_by_client"] += 1
            if not await ws.close(5):
                counters["ws_close_unanswered"] += 1
        for ws in socks[2:]:
            counters["ws_backend_killed"] += 1
            ws.send(b"__abort__")
            if not await ws.wait_closed_by_peer(5):
                counters["ws_left_open_after_backend_died"] += 1
    except (WireError, OSError, TimeoutError) as exc:
        counters[f"ws_error_{type(exc).__name__}"] += 1
    finally:
        for ws in socks:
            ws.abort()
    for kind, path in (("dead", "/bench/dead/ws"), ("dead", "/bench/dead/ws"), ("nows", "/bench/nows/nows")):
        try:
            ws = await WsConn.open(HOST, px.port, path, timeout=5)
            counters[f"upgrade_{kind}_101"] += 1
            ws.abort()
        except WsRefused as r:
            counters[f"upgrade_{kind}_{r.status}"] += 1
        except TimeoutError:
            counters[f"upgrade_{kind}_unanswered"] += 1
        except (WireError, OSError) as exc:
            counters[f"upgrade_{kind}_{type(exc).__name__}"] += 1
    conn = HttpConn(HOST, px.port)
    try:
        for _ in range(4):
            try:
                async with asyncio.timeout(10):
                    r = await conn.request("GET", "/bench/dead/x")
                counters[f"get_dead_{r.status}"] += 1
            except (WireError, OSError, TimeoutError) as exc:
                counters[f"get_dead_{type(exc).__name__}"] += 1
    finally:
        conn.close()


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


async def get_once(port: int, path: str, timeout: float = 5.0) -> Any:
    conn = HttpConn(HOST, port)
    try:
        async with asyncio.timeout(timeout):
            return await conn.request("GET", path, headers={"Connection": "close"})
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------- setup

def ensure_chp() -> str:
    """Install CHP 5 into the cache directory unless it is there; returns its version."""
    binary = CACHE / "node_modules" / ".bin" / "configurable-http-proxy"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise SystemExit("node and npm are needed for configurable-http-proxy: install Node.js (≥ 20) with npm")
        CACHE.mkdir(parents=True, exist_ok=True)
        say(f"installing {CHP_SPEC} into {CACHE} …")
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), CHP_SPEC],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not binary.exists():
            raise SystemExit(f"npm install {CHP_SPEC} failed (status {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    r = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    version = r.stdout.strip()
    if r.returncode != 0 or not version.startswith("5."):
        raise SystemExit(f"{binary} --version answered {r.returncode} {version!r} {r.stderr[-500:]!r}; "
                         f"remove {CACHE} to reinstall")
    return version


def _first_line(args: list[str]) -> str:
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def machine_info() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import uvloop

    from fleethub.shared.embedded import nats_server_binary

    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True).stdout
    return {
        "nproc": str(os.cpu_count()), "cpu": model, "kernel": platform.release(),
        "python": platform.python_version(), "uvloop": uvloop.__version__,
        "node": _first_line(["node", "--version"]), "chp": CHP_VERSION,
        "wrk": _first_line([wrk_binary(), "-v"]).split(" [")[0],
        "nats-server": _first_line([str(nats_server_binary()), "--version"]).removeprefix("nats-server: "),
        "fleethub": f"{commit}{' (uncommitted changes)' if dirty.strip() else ''}",
    }


CHP_VERSION = "?"


# ------------------------------------------------------------------------------------------------ report

@dataclass
class Row:
    figure: str
    better: str  # "higher" | "lower" | ""
    direct: Any = None
    chp: Any = None
    fh: Any = None
    note: str = ""


def ratio(row: Row) -> str:
    if isinstance(row.chp, (int, float)) and isinstance(row.fh, (int, float)) and row.chp > 0 and row.fh >= 0:
        return f"{row.fh / row.chp:.2f}"
    return "–"


def build_rows(b: Bench) -> list[Row]:
    r = b.results
    rows: list[Row] = []
    wrk = r.get("wrk", {})

    def w(size: str, c: int, key: str, field_: str) -> Any:
        x = wrk.get(f"{size}.c{c}.{key}")
        return None if x is None else x.get(field_)

    for size, label in (("1k", "1 KiB"), ("1m", "1 MiB")):
        for c in (32, 256):
            rows.append(Row(f"wrk {label} c{c}: requests/s", "higher", w(size, c, "direct", "rps"),
                            w(size, c, "chp", "rps"), w(size, c, "fh", "rps")))
            rows.append(Row(f"wrk {label} c{c}: requests/s, fleethub 1 worker", "higher",
                            w(size, c, "direct", "rps"), w(size, c, "chp", "rps"), w(size, c, "fh1", "rps")))
            rows.append(Row(f"wrk {label} c{c}: p50 ms", "lower", w(size, c, "direct", "p50_ms"),
                            w(size, c, "chp", "p50_ms"), w(size, c, "fh", "p50_ms")))
            rows.append(Row(f"wrk {label} c{c}: p99 ms", "lower", w(size, c, "direct", "p99_ms"),
                            w(size, c, "chp", "p99_ms"), w(size, c, "fh", "p99_ms")))
            rows.append(Row(f"wrk {label} c{c}: proxy CPU µs/request (direct: backend)", "lower",
                            w(size, c, "direct", "cpu_us_per_req"), w(size, c, "chp", "cpu_us_per_req"),
                            w(size, c, "fh", "cpu_us_per_req")))
    d50, d99 = w("1k", 1, "direct", "p50_ms"), w("1k", 1, "direct", "p99_ms")

    def added(v: Any, base: Any) -> Any:
        return v - base if isinstance(v, (int, float)) and isinstance(base, (int, float)) else None

    rows.append(Row("wrk 1 KiB c1: p50 ms", "lower", d50, w("1k", 1, "chp", "p50_ms"), w("1k", 1, "fh", "p50_ms")))
    rows.append(Row("wrk 1 KiB c1: p99 ms", "lower", d99, w("1k", 1, "chp", "p99_ms"), w("1k", 1, "fh", "p99_ms")))
    rows.append(Row("added latency c1 p50 ms (proxy − direct)", "lower", None,
                    added(w("1k", 1, "chp", "p50_ms"), d50), added(w("1k", 1, "fh", "p50_ms"), d50)))
    rows.append(Row("added latency c1 p99 ms (proxy − direct)", "lower", None,
                    added(w("1k", 1, "chp", "p99_ms"), d99), added(w("1k", 1, "fh", "p99_ms"), d99)))
    rows.append(Row("wrk 1 KiB c1: requests/s, fleethub 1 worker", "higher", w("1k", 1, "direct", "rps"),
                    w("1k", 1, "chp", "rps"), w("1k", 1, "fh1", "rps")))

    ws = r.get("ws", {})

    def wsv(key: str, f: str) -> Any:
        return ws.get(key, {}).get(f)

    p = b.plan
    rows.append(Row(f"websocket echo {p.ws_conns}×{p.ws_msgs}: messages/s", "higher", wsv("direct", "msgs_per_s"),
                    wsv("chp", "msgs_per_s"), wsv("fh", "msgs_per_s")))
    rows.append(Row(f"websocket echo 1×{p.ws_rtt}: RTT p50 µs", "lower", wsv("direct", "rtt_p50_us"),
                    wsv("chp", "rtt_p50_us"), wsv("fh", "rtt_p50_us")))
    rows.append(Row(f"websocket echo 1×{p.ws_rtt}: RTT p99 µs", "lower", wsv("direct", "rtt_p99_us"),
                    wsv("chp", "rtt_p99_us"), wsv("fh", "rtt_p99_us")))

    api = r.get("route_api", {})

    def av(key: str, f: str) -> Any:
        return api.get(key, {}).get(f)

    rows.append(Row(f"route API: {p.api_seq} sequential adds, routes/s", "higher", None,
                    av("chp", "seq_routes_per_s"), av("fh", "seq_routes_per_s")))
    rows.append(Row("route API: per-add p50 ms", "lower", None, av("chp", "seq_p50_ms"), av("fh", "seq_p50_ms")))
    rows.append(Row("route API: per-add p99 ms", "lower", None, av("chp", "seq_p99_ms"), av("fh", "seq_p99_ms")))
    rows.append(Row(f"route API: {p.api_clients} concurrent clients, routes/s", "higher", None,
                    av("chp", "conc_routes_per_s"), av("fh", "conc_routes_per_s")))

    prop = r.get("propagation", {})

    def pv(key: str, f: str) -> Any:
        return prop.get(key, {}).get(f) if isinstance(prop.get(key), dict) else None

    nodes = pv("fh", "nodes")
    where = f"CHP 1 node, fleethub {nodes} nodes" if nodes else "all nodes"
    for f, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        rows.append(Row(f"route change → served by every node ({where}), {p.routes} routes: {name} ms", "lower",
                        None, pv("chp", f), pv("fh", f)))
    rows.append(Row(f"fresh node: exec → serving {p.routes} routes, s", "lower", None, "N/A (starts empty)",
                    prop.get("fh.fresh_node_s")))

    mem = r.get("memory", {})

    def mv(key: str, which: str) -> Any:
        return mem.get(f"{key}.{which}")

    def mib(x: Any) -> Any:
        return None if x is None else x["node"] / MIB

    def per10k(key: str, per_worker: bool) -> Any:
        a, z = mv(key, "rss0"), mv(key, "rss_routes")
        if a is None or z is None or not p.routes:
            return None
        if per_worker:
            if len(a["workers"]) != len(z["workers"]) or not a["workers"]:
                return None
            grow = sum(zz - aa for aa, zz in zip(a["workers"], z["workers"], strict=True)) / len(a["workers"])
        else:
            grow = z["node"] - a["node"]
        return grow / MIB * 10_000 / p.routes

    rows.append(Row("RSS, 0 routes, MiB (node: every process)", "lower", None, mib(mv("chp", "rss0")),
                    mib(mv("fh", "rss0"))))
    rows.append(Row(f"RSS, {p.routes} routes, MiB (node)", "lower", None, mib(mv("chp", "rss_routes")),
                    mib(mv("fh", "rss_routes"))))
    rows.append(Row("RSS growth per 10,000 routes, MiB (node)", "lower", None, per10k("chp", False),
                    per10k("fh", False)))
    rows.append(Row("RSS growth per 10,000 routes, MiB (per worker)", "lower", None, per10k("chp", True),
                    per10k("fh", True)))

    soak = r.get("soak", {})

    def sv(key: str, f: str) -> Any:
        return soak.get(key, {}).get(f)

    rows.append(Row(f"soak {p.soak:.0f} s: RSS growth %", "lower", None, sv("chp", "rss_growth_pct"),
                    sv("fh", "rss_growth_pct")))
    rows.append(Row(f"soak: open fds after {p.idle:.0f} s idle − before", "lower", None, sv("chp", "fd_delta"),
                    sv("fh", "fd_delta")))
    rows.append(Row(f"soak: open sockets after {p.idle:.0f} s idle − before", "lower", None, sv("chp", "socket_delta"),
                    sv("fh", "socket_delta")))
    rows.append(Row("soak: ESTABLISHED sockets to the dead target (end / max)", "lower", None,
                    _pair(sv("chp", "established_to_dead_end"), sv("chp", "established_to_dead_max")),
                    _pair(sv("fh", "established_to_dead_end"), sv("fh", "established_to_dead_max"))))

    def left_open(key: str) -> Any:
        c = soak.get(key, {}).get("counters")
        return None if c is None else c.get("ws_left_open_after_backend_died", 0)

    rows.append(Row("soak: websockets left open by the proxy after the backend dropped them", "lower", None,
                    left_open("chp"), left_open("fh")))
    return rows


def _pair(a: Any, b: Any) -> Any:
    return None if a is None else f"{a} / {b}"


NOTES = """
- direct: wrk/websocket client straight to the backend (a single-process uvloop server) — the ceiling.
- CPU µs/request: utime + stime of every process of the proxy (CHP: node; fleethub: supervisor and
  workers) during the wrk run, divided by the requests served; direct column: the backend's.
- Client, backend and proxies share the same cores, so a proxy's figures include contention with them.
- Route change → served: from just before the API POST (to CHP, or to fleethub node 1) until one
  kept-alive connection to every serving process of every node answers from the new backend.
- RSS sums every process of a node (fleethub: the supervisor and its workers, each its own
  interpreter; pages of shared libraries count in each — PSS is in the JSON); per-worker growth
  is the mean over the serving processes.
- Soak: websocket churn (half closed by the client, half dropped by the backend), upgrades and GETs
  to a route whose target has nothing listening, and upgrades answered with a plain 503. Sockets
  after idle include each process's pooled keep-alive connection to the backend (JSON: to_backend_end)."""


def render(b: Bench) -> str:
    rows = build_rows(b)
    out = ["| figure | better | direct | CHP | fleethub | fleethub/CHP |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        cells = (row.figure, row.better, fmt(row.direct), fmt(row.chp), fmt(row.fh), ratio(row))
        out.append("| " + " | ".join(cells) + " |")
    names = {"direct": "direct", "chp": "CHP", "fh": "fleethub", "fh1": "fleethub 1 worker"}
    for key, x in b.results.get("wrk", {}).items():
        if x.get("errors") or x.get("non2xx"):
            size, conns, who = key.split(".", 2)
            out.append(f"\nwrk {size} {conns} against {names.get(who, who)}: {x['errors']} socket errors "
                       f"(connect/read/write/timeout), {x['non2xx']} non-2xx answers.")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------- main

def main() -> int:
    global CHP_VERSION
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, fewer routes (a smoke test, < 3 min)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of each wrk run (10; quick: 2)")
    parser.add_argument("--soak", type=float, default=None, help="seconds of soak per proxy (60; quick: 20)")
    parser.add_argument("--routes", type=int, default=None, help="routes loaded (10,000; quick: 2,000)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) afterwards")
    args = parser.parse_args()
    wrk_binary()
    plan = Plan.from_args(args)
    CHP_VERSION = ensure_chp()
    import uvloop

    workdir = Path(tempfile.mkdtemp(prefix="fleethub-bench-proxy-"))
    bench = Bench(plan, workdir)
    t0 = time.perf_counter()
    say(f"fleethub proxy vs configurable-http-proxy {CHP_VERSION} ({'quick' if plan.quick else 'full'} run; "
        f"logs in {workdir})")
    interrupted = False
    failed: BaseException | None = None

    try:
        uvloop.run(until_sigterm(bench.run, bench.cleanup))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        say("\ninterrupted: stopping every process")
    except (BenchError, OSError, WireError, TimeoutError) as exc:
        failed = exc
    finally:
        bench.cleanup()
    elapsed = time.perf_counter() - t0
    if failed is not None:
        say(f"\nbenchmark failed: {type(failed).__name__}: {failed}")
        say(f"logs kept in {workdir}")
        return 2
    if interrupted:
        say(f"logs kept in {workdir}")
        return 130
    say(f"\n## fleethub proxy vs configurable-http-proxy {CHP_VERSION}\n")
    m = bench.results["machine"]
    say(f"{m['nproc']} × {m['cpu']}, Linux {m['kernel']}; Python {m['python']} (uvloop {m['uvloop']}), "
        f"node {m['node']}, {m['wrk']}, nats-server {m['nats-server']}; fleethub {m['fleethub']}. "
        f"fleethub: 2 workers per node unless stated. Run took {elapsed:.0f} s"
        f"{' (--quick)' if plan.quick else ''}; wrk {plan.duration:.0f} s per figure.\n")
    say(render(bench))
    say(NOTES)
    if bench.errors:
        say("\nfailed measurements (– in the table):")
        for e in bench.errors:
            say(f"- {e}")
    if args.json is not None:
        bench.results["errors"] = bench.errors
        bench.results["elapsed_s"] = elapsed
        args.json.write_text(json.dumps(bench.results, indent=2, default=str))
        say(f"\nfigures written to {args.json}")
    if bench.errors or args.keep:
        say(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bench.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
