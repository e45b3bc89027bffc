"""The measured workload: batch user creation with stall probers, the paginated walk, and wrk runs.

wrk is driven through bench/proxy/loadgen.py (its binary lookup, report parser and reaping), with a
Lua script that asks for a random `bench-user-NNNNN` per request, as the JupyterHub baseline did.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import loadgen
from hubs import ADMIN, HOST, Hub, request
from loadgen import WrkResult, parse_wrk, wrk_binary
from others import Others
from proctree import BenchError
from wire import HttpConn

PAGINATION = "application/jupyterhub-pagination+json"
PAGE_LIMIT = 200
PROBE_INTERVAL = 0.05


def user_name(i: int) -> str:
    return f"bench-user-{i:05d}"


def pct(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


# ------------------------------------------------------------------------------- 1. batch creation

@dataclass
class Probe:
    sent: float
    done: float
    status: int  # 0: failed

    @property
    def latency(self) -> float:
        return self.done - self.sent


@dataclass
class ProbeStats:
    """What one prober saw while the batch ran (window = the batch POST's start to its answer)."""

    path: str
    idle_p50_ms: float | None = None  # before the batch
    sent: int = 0  # probes sent during the window
    answered: int = 0  # probes answered (2xx) during the window
    failed: int = 0  # non-2xx or broken, during the window
    max_ms: float | None = None  # slowest probe that overlapped the window
    p50_ms: float | None = None  # of the probes that overlapped the window
    longest_gap_s: float | None = None  # longest stretch of the window with no answer


def probe_stats(path: str, probes: list[Probe], t0: float, t1: float) -> ProbeStats:
    st = ProbeStats(path)
    idle = [p.latency * 1000 for p in probes if p.done < t0 and p.status // 100 == 2]
    st.idle_p50_ms = pct(idle, 50)
    overlap = [p for p in probes if p.sent < t1 and p.done > t0]
    st.sent = sum(1 for p in probes if t0 <= p.sent < t1)
    inside = [p for p in probes if t0 <= p.done <= t1]
    st.answered = sum(1 for p in inside if p.status // 100 == 2)
    st.failed = sum(1 for p in overlap if p.status // 100 != 2)
    lat = [p.latency * 1000 for p in overlap]
    st.max_ms, st.p50_ms = (max(lat), pct(lat, 50)) if lat else (None, None)
    marks = [t0, *sorted(p.done for p in inside if p.status // 100 == 2), t1]
    st.longest_gap_s = max(b - a for a, b in itertools.pairwise(marks))
    return st


async def prober(port: int, path: str, headers: dict[str, str], stop: asyncio.Event, out: list[Probe]) -> None:
    """`GET path` every PROBE_INTERVAL on one keep-alive connection (a late answer skips the missed ticks)."""
    conn = HttpConn(HOST, port, headers)
    start = time.perf_counter()
    tick = 0
    try:
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                status = (await conn.request("GET", path)).status
            except Exception:  # a failed probe is a figure, not a crash
                conn.close()
                status = 0
            done = time.perf_counter()
            out.append(Probe(sent, done, status))
            tick = max(tick + 1, math.ceil((done - start) / PROBE_INTERVAL))
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, start + tick * PROBE_INTERVAL - time.perf_counter()))
            except TimeoutError:
                pass
    finally:
        conn.close()


@dataclass
class BatchResult:
    users: int
    seconds: float
    status: int
    created: int
    cpu_s: float
    cpu_by_part: dict[str, float] = field(default_factory=dict)
    probes: list[ProbeStats] = field(default_factory=list)
    foreign_cpu_s: float = 0.0


async def create_users(hub: Hub, n: int, *, lead: float = 1.0) -> BatchResult:
    """One `POST /hub/api/users` with n names while two probers run: `GET /hub/api/` and a token read."""
    stop = asyncio.Event()
    targets = [("/hub/api/", {}), (f"/hub/api/users/{ADMIN}", {"Authorization": f"token {hub.admin_token}"})]
    runs: list[list[Probe]] = [[] for _ in targets]
    tasks = [asyncio.create_task(prober(hub.port, path, hdrs, stop, out))
             for (path, hdrs), out in zip(targets, runs, strict=True)]
    body = json.dumps({"usernames": [user_name(i) for i in range(n)]}).encode()
    conn = HttpConn(HOST, hub.port, {"Authorization": f"token {hub.admin_token}", "Content-Type": "application/json"})
    try:
        await asyncio.sleep(lead)  # idle latency of the probes first
        cpu0 = hub.cpu_by()
        others = Others()
        t0 = time.perf_counter()
        async with asyncio.timeout(1800):
            r = await conn.request("POST", "/hub/api/users", body=body)
        t1 = time.perf_counter()
        cpu = cpu_delta(cpu0, hub.cpu_by())
        foreign = others.used()
    finally:
        conn.close()
        stop.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
    created = len(r.json()) if r.status == 201 else 0
    if r.status != 201 or created != n:
        raise BenchError(f"{hub.label}: POST /hub/api/users with {n} names answered {r.status}, {created} users: "
                         f"{r.body[:300]!r}")
    stats = [probe_stats(path, out, t0, t1) for (path, _), out in zip(targets, runs, strict=True)]
    return BatchResult(n, t1 - t0, r.status, created, sum(cpu.values()), cpu, stats, foreign)


# ---------------------------------------------------------------------------------------- 2. page walk

@dataclass
class WalkResult:
    pages: int
    items: int
    total: int  # _pagination.total
    seconds: float
    page_ms: list[float]
    notes: list[str] = field(default_factory=list)


async def walk_users(hub: Hub) -> WalkResult:
    """Every page of `GET /hub/api/users?limit=200` (paginated form), following `_pagination.next.url`."""
    conn = HttpConn(HOST, hub.port, {"Authorization": f"token {hub.admin_token}", "Accept": PAGINATION})
    here = f"{HOST}:{hub.port}"
    path: str | None = f"/hub/api/users?limit={PAGE_LIMIT}"
    pages, items, total = 0, 0, 0
    times: list[float] = []
    notes: list[str] = []
    t0 = time.perf_counter()
    try:
        while path is not None:
            t = time.perf_counter()
            r = await conn.request("GET", path)
            if r.status != 200:
                raise BenchError(f"{hub.label}: GET {path} answered {r.status}: {r.body[:300]!r}")
            data: dict[str, Any] = r.json()
            times.append((time.perf_counter() - t) * 1000)
            pages += 1
            items += len(data["items"])
            total = int(data["_pagination"]["total"])
            nxt = data["_pagination"]["next"]
            if nxt is None:
                path = None
                continue
            url = urlsplit(nxt["url"])
            if url.netloc != here and not notes:
                notes.append(f"next.url points at {url.scheme}://{url.netloc}, not {here}: followed on {here}")
            path = url.path + (f"?{url.query}" if url.query else "")
            if pages > 10_000:
                raise BenchError(f"{hub.label}: the page walk does not end (last next.url {nxt['url']})")
    finally:
        conn.close()
    return WalkResult(pages, items, total, time.perf_counter() - t0, times, notes)


# ------------------------------------------------------------------------------------------ 3./4. wrk

def lua_script(path: Path, n_users: int | None) -> Path:
    """A wrk script: a random bench user per request (or `GET /hub/api/` when n_users is None)."""
    if n_users is None:
        path.write_text('request = function() return wrk.format("GET", "/hub/api/") end\n')
    else:
        path.write_text(
            "local counter = 0\n"
            "function setup(thread) counter = counter + 1; thread:set('seed', counter) end\n"
            "function init(args) math.randomseed(os.time() * 100 + (seed or 0)) end\n"
            f"request = function() return wrk.format(\"GET\", string.format(\"/hub/api/users/bench-user-%05d\", "
            f"math.random(0, {n_users - 1}))) end\n")
    return path


@dataclass
class LoadResult:
    wrk: WrkResult
    cpu_us_per_req: float | None  # the hub's whole process tree
    cpu_us_by_part: dict[str, float] = field(default_factory=dict)  # "api" | "postgres" | "other"
    foreign_cpu_s: float = 0.0  # CPU seconds other processes on the machine used meanwhile


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


async def wrk(hub: Hub, script: Path, *, token: str | None, duration: float, conns: int = 16,
              threads: int = 2) -> LoadResult:
    """`wrk -t2 -c16 -d… --latency --timeout 10s [-H token] -s script` against the hub's API port."""
    args = [wrk_binary(), f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency",
            "--timeout", "10s", "-s", str(script)]
    if token is not None:
        args += ["-H", f"Authorization: token {token}"]
    args.append(f"http://{HOST}:{hub.port}/")
    cpu0 = hub.cpu_by()
    others = Others()
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    loadgen.RUNNING.add(proc.pid)  # loadgen.stop_all() reaps it after an interruption
    try:
        async with asyncio.timeout(duration * 2 + 30):
            out, _ = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    finally:
        if proc.returncode is not None:
            loadgen.RUNNING.discard(proc.pid)
    cpu = cpu_delta(cpu0, hub.cpu_by())
    foreign = others.used()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk against {hub.label} failed (status {proc.returncode}):\n{text[-1500:]}")
    result = parse_wrk(text)
    result.cpu_s = sum(cpu.values())
    per = {k: v / result.requests * 1e6 for k, v in cpu.items()} if result.requests else {}
    return LoadResult(result, sum(per.values()) if per else None, per, foreign)


async def check_token(hub: Hub, token: str) -> int:
    """Status of `GET /hub/api/users/admin` with `token` (200 when it may read users)."""
    return (await request(hub.port, "GET", f"/hub/api/users/{ADMIN}", token=token)).status
