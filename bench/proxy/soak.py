"""The soak (6): websocket churn, upgrades and GETs to a dead target and to a server refusing websockets, with
the proxy's RSS, fds and sockets sampled before, during and after an idle pause."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from common import HOST, MIB, PAYLOAD, Proxy, say, stop_tasks
from harness import Harness
from proctree import established_to, sample_tree
from wire import HttpConn, WireError, WsConn, WsRefused


class SoakFigures(Harness):
    """A soak of one proxy, for leaks of memory, fds and sockets."""

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
