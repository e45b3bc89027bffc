"""What the proxy benchmark's modules share: constants, the Plan (from the command line), a Proxy under test,
and small helpers (percentiles, progress lines, one-shot GETs, stopping tasks)."""

from __future__ import annotations

import argparse
import asyncio
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctree import BenchError, Proc, cpu_seconds
from wire import HttpConn, RouteApi

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HOST = "127.0.0.1"
MIB = 1024 * 1024
PAYLOAD = bytes(random.Random(7).randrange(256) for _ in range(64))
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0


def pct(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `xs`, None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def say(text: str) -> None:
    """Print a progress line at once (the run is long and read as it goes)."""
    print(text, flush=True)


def user_path(i: int) -> str:
    """The path prefix of the benchmark's i-th user route."""
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


async def get_once(port: int, path: str, timeout: float = 5.0) -> Any:
    """One GET on a fresh connection, closed afterwards."""
    conn = HttpConn(HOST, port)
    try:
        async with asyncio.timeout(timeout):
            return await conn.request("GET", path, headers={"Connection": "close"})
    finally:
        conn.close()


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
