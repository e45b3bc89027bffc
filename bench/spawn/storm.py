"""The timed parts, the same for both hubs, all through the hub's public port (its proxy), as a client sees it.

- `concurrent_spawns`: N `POST /hub/api/users/<u>/server` at once; for each, once its POST is answered,
  `GET /user/<u>/api` through the proxy every 25 ms until the server itself answers (200 and its user name
  in the body: a redirect, a hub page or a proxy error do not count).
- `storm`: M spawn POSTs sent at once, while a prober asks `GET /hub/api/users/<other>` every 20 ms; then
  the accepted servers are counted ready (`GET /hub/api/users?state=ready`, paginated) until all are.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hubs import HOST, request
from wire import HttpConn, WireError

REACH_POLL = 0.025
PROBE_EVERY = 0.02
COUNT_EVERY = 1.0
POST_TIMEOUT = 120.0


def pct(xs: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank), None for no samples."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


async def _post_spawn(port: int, token: str, user: str) -> tuple[int, dict[str, str]]:
    try:
        r = await request(port, "POST", f"/hub/api/users/{user}/server", token=token, body={},
                          timeout=POST_TIMEOUT)
        return r.status, r.headers
    except (OSError, WireError, TimeoutError) as exc:
        return 0, {"error": f"{type(exc).__name__}: {exc}"}


async def _answers(conn: HttpConn, user: str) -> bool:
    try:
        r = await asyncio.wait_for(conn.request("GET", f"/user/{user}/api"), 5)
    except (OSError, WireError, TimeoutError):
        conn.close()
        return False
    if r.status != 200:
        return False
    try:
        return bool(r.json().get("user") == user)
    except ValueError:
        return False


async def until_reachable(port: int, user: str, deadline: float) -> tuple[float | None, int]:
    """perf_counter time at which `/user/<user>/api` first answered from the server through the proxy (None: not
    by `deadline`), and how many tries failed before."""
    conn = HttpConn(HOST, port)
    misses = 0
    try:
        while time.perf_counter() < deadline:
            if await _answers(conn, user):
                return time.perf_counter(), misses
            misses += 1
            await asyncio.sleep(REACH_POLL)
        return None, misses
    finally:
        conn.close()


@dataclass
class Spawns:
    n: int
    statuses: dict[str, int]
    all_answered_s: float  # until the last POST was answered
    all_201_s: float | None  # the same, None unless every answer was 201
    all_reachable_s: float | None  # until the last server answered through the proxy; None: some never did
    unreachable: int
    ready_not_reachable: int  # answered 201 (ready) but the first try through the proxy did not reach it
    reach_after_answer_ms: list[float] = field(default_factory=list)  # per server, POST answer → reachable


async def concurrent_spawns(port: int, token: str, users: list[str], timeout: float = 180.0) -> Spawns:
    t0 = time.perf_counter()
    deadline = t0 + timeout

    async def one(user: str) -> tuple[int, float, float | None, int]:
        status, _ = await _post_spawn(port, token, user)
        answered = time.perf_counter()
        if status not in (200, 201, 202):
            return status, answered, None, 0
        reached, misses = await until_reachable(port, user, deadline)
        return status, answered, reached, misses

    results = await asyncio.gather(*(one(u) for u in users))
    statuses = Counter(str(r[0]) for r in results)
    reached = [r[2] for r in results if r[2] is not None]
    return Spawns(
        n=len(users), statuses=dict(statuses),
        all_answered_s=max(r[1] for r in results) - t0,
        all_201_s=max(r[1] for r in results) - t0 if statuses.get("201") == len(users) else None,
        all_reachable_s=max(reached) - t0 if len(reached) == len(users) else None,
        unreachable=len(users) - len(reached),
        ready_not_reachable=sum(1 for r in results if r[0] == 201 and r[3] > 0),
        reach_after_answer_ms=[(r[2] - r[1]) * 1000 for r in results if r[2] is not None],
    )


class Prober:
    """`GET /hub/api/users/<user>` on one keep-alive connection, one at a time, every PROBE_EVERY seconds."""

    def __init__(self, port: int, token: str, user: str) -> None:
        self.conn = HttpConn(HOST, port, {"Authorization": f"token {token}"})
        self.user = user
        self.samples: list[tuple[float, float]] = []  # (perf_counter at send, latency s)
        self.failures: Counter[str] = Counter()

    async def run(self, until: asyncio.Event) -> None:
        while not until.is_set():
            t = time.perf_counter()
            try:
                r = await asyncio.wait_for(self.conn.request("GET", f"/hub/api/users/{self.user}"), 30)
                if r.status == 200:
                    self.samples.append((t, time.perf_counter() - t))
                else:
                    self.failures[str(r.status)] += 1
            except (OSError, WireError, TimeoutError) as exc:
                self.conn.close()
                self.failures[type(exc).__name__] += 1
            await asyncio.sleep(max(0.0, PROBE_EVERY - (time.perf_counter() - t)))
        self.conn.close()

    def between(self, a: float, b: float) -> list[float]:
        return [lat * 1000 for t, lat in self.samples if a <= t <= b]


async def probe_for(port: int, token: str, user: str, seconds: float) -> list[float]:
    """Probe latencies (ms) of an idle hub over `seconds`."""
    prober = Prober(port, token, user)
    done = asyncio.Event()
    task = asyncio.create_task(prober.run(done))
    await asyncio.sleep(seconds)
    done.set()
    await task
    return prober.between(0, float("inf"))


async def count_ready(port: int, token: str, names: set[str]) -> int:
    """How many of `names` have a ready default server (`GET /hub/api/users?state=ready`, every page)."""
    found, offset = 0, 0
    while True:
        r = await request(port, "GET", f"/hub/api/users?state=ready&offset={offset}&limit=200", token=token,
                          timeout=60)
        if r.status != 200:
            raise WireError(f"GET /hub/api/users?state=ready answered {r.status}: {r.body[:200]!r}")
        page: list[dict[str, Any]] = r.json()
        found += sum(1 for u in page if u.get("name") in names and (u.get("servers") or {}).get("", {}).get("ready"))
        if len(page) < 200:
            return found
        offset += 200


@dataclass
class Storm:
    n: int
    send_span_s: float  # first to last request written (the goal: all within 1 s)
    all_answered_s: float
    statuses: dict[str, int]
    retry_after: int  # 429 answers that carried Retry-After
    errors: list[str]
    accepted: int  # 201 + 202
    all_running_s: float | None  # until every accepted server was ready (None: not within the timeout)
    ready_at_end: int
    idle_ms: list[float]
    storm_ms: list[float]  # prober latencies from the first POST until every accepted server was ready
    probe_failures: dict[str, int]

    def probe(self, which: str, q: float) -> float | None:
        return pct(self.idle_ms if which == "idle" else self.storm_ms, q)


async def storm(port: int, token: str, users: list[str], other: str, *, idle_s: float = 3.0,
                settle_timeout: float = 300.0) -> Storm:
    idle = await probe_for(port, token, other, idle_s)
    prober = Prober(port, token, other)
    done = asyncio.Event()
    probe_task = asyncio.create_task(prober.run(done))
    sent: list[float] = []

    async def one(user: str) -> tuple[int, dict[str, str], float]:
        sent.append(time.perf_counter())
        status, headers = await _post_spawn(port, token, user)
        return status, headers, time.perf_counter()

    t0 = time.perf_counter()
    try:
        results = await asyncio.gather(*(one(u) for u in users))
        statuses = Counter(str(r[0]) for r in results)
        names = {u for u, r in zip(users, results, strict=True) if r[0] in (201, 202)}
        ready, running_at = 0, None
        while time.perf_counter() - t0 < settle_timeout:
            ready = await count_ready(port, token, names)
            if ready >= len(names):
                running_at = time.perf_counter()
                break
            await asyncio.sleep(COUNT_EVERY)
    finally:
        done.set()
        await probe_task
    end = running_at or time.perf_counter()
    return Storm(
        n=len(users), send_span_s=max(sent) - min(sent), all_answered_s=max(r[2] for r in results) - t0,
        statuses=dict(statuses), retry_after=sum(1 for r in results if r[0] == 429 and "retry-after" in r[1]),
        errors=sorted({r[1]["error"] for r in results if r[0] == 0})[:5], accepted=len(names),
        all_running_s=running_at - t0 if running_at else None, ready_at_end=ready,
        idle_ms=idle, storm_ms=prober.between(t0, end), probe_failures=dict(prober.failures),
    )


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None
