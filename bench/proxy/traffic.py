"""Figures of traffic through a proxy: wrk throughput, latency and CPU per request (1), websocket echo (2)."""

from __future__ import annotations

import asyncio
import time

from common import HOST, PAYLOAD, Proxy, get_once, pct, say, user_path
from harness import Harness
from loadgen import WrkResult, run_wrk
from proctree import BenchError, cpu_seconds
from wire import WsConn


class TrafficFigures(Harness):
    """wrk runs against direct, CHP and fleethub (2 and 1 workers); websocket echo rate and round trip."""

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
