"""fleethub's REST API against JupyterHub 6.1 (sqlite), the same workload on both in one run.

For each user count (2,000 then 10,000; `--quick`: 2,000 with short runs), each hub is started fresh
(JupyterHub from its own venv under ~/.cache/fleethub-bench with configurable-http-proxy; fleethub
with `fleethub up`, embedded NATS and PostgreSQL, in a temporary data dir), one after the other, and
talked to on its API process directly (JupyterHub's hub port, fleethub's api replica), never through
a proxy:

 1. one `POST /hub/api/users {"usernames": [...]}` with N names, timed, while two probers send
    `GET /hub/api/` and `GET /hub/api/users/admin` (token) every 50 ms: does the hub stall?
 2. walk `GET /hub/api/users?limit=200` (paginated form) following `_pagination.next.url`, 3 times;
 3. `GET /hub/api/users/<random bench user>`, wrk -t2 -c16, with (a) a token the hub generated
    (`POST /hub/api/users/admin/tokens`) and (b) the `bench` service's config-provided api_token;
 4. `GET /hub/api/`, wrk -t2 -c16 (first user count only).

Prints a table per user count with ratios (>1: fleethub better) and PASS/MISS against the goals
(never asserts), optionally writes it as markdown (`--out`) and every figure as JSON (`--json`).

    python bench/api/run.py [--quick] [--users 2000,10000] [--duration S] [--out results.md] [--json f.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (str(ROOT / "bench" / "proxy"), str(ROOT), str(HERE)):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)

import hubs
import loadgen
import report
from hubs import Hub, say
from others import Others
from proctree import BenchError, until_sigterm
from wire import WireError
from workload import BatchResult, LoadResult, WalkResult, check_token, create_users, lua_script, walk_users, wrk

WALKS = 3
BATCH_RETRIES = 1  # a fresh hub once more when other processes disturbed the batch creation


class Disturbed(Exception):
    """Other processes used the machine during a step that cannot be repeated on the same hub."""

RETRIES = 2  # more wrk runs of a figure when other processes used over report.NOISE_SHARE of a core


@dataclass
class Plan:
    sizes: list[int]
    duration: float  # seconds of each measured wrk run
    warmup: float  # seconds of wrk before each measured run (discarded)
    quick: bool
    quiet_wait: float  # seconds to wait at most for a quiet machine before each timed step


@dataclass
class HubRun:
    """Everything measured on one hub at one user count."""

    start_s: float | None = None
    batch: BatchResult | None = None
    walks: list[WalkResult] = field(default_factory=list)
    reads: dict[str, LoadResult | str] = field(default_factory=dict)  # "generated" | "service" → result or refusal
    root: LoadResult | None = None
    cpu_total_s: float | None = None
    findings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, plan: Plan, workdir: Path, chp: str) -> None:
        self.plan = plan
        self.workdir = workdir
        self.chp = chp
        self.runs: dict[int, dict[str, HubRun]] = {}
        self.running: list[Hub] = []
        self.notes: list[str] = []
        self.started = 0  # hubs started so far (each gets its own directory)

    def cleanup(self) -> None:
        loadgen.stop_all()
        for hub in list(self.running):
            try:
                hub.proc.stop(timeout=30)
            except Exception as exc:  # keep stopping the others
                say(f"  ! stopping {hub.label}: {exc!r}")
            self.running.remove(hub)

    async def run(self) -> None:
        for i, n in enumerate(self.plan.sizes):
            self.runs[n] = {}
            order = ("jh", "fh") if i % 2 == 0 else ("fh", "jh")  # alternate who goes first
            for key in order:
                for attempt in range(1 + BATCH_RETRIES):
                    self.runs[n][key] = run = HubRun()
                    try:
                        await self.one_hub(key, n, run, with_root=i == 0, last=attempt == BATCH_RETRIES)
                    except Disturbed as exc:
                        say(f"  ! {exc}: once more with a fresh hub")
                        continue
                    except (BenchError, WireError, OSError, TimeoutError, KeyError, ValueError) as exc:
                        run.errors.append(f"{type(exc).__name__}: {exc}")
                        say(f"  ! {key} at {n:,} users failed: {type(exc).__name__}: {str(exc)[:2000]}")
                    break

    async def one_hub(self, key: str, n: int, run: HubRun, *, with_root: bool, last: bool = True) -> None:
        label = "JupyterHub" if key == "jh" else "fleethub"
        say(f"\n== {label}, {n:,} users")
        await wait_quiet(self.plan.quiet_wait)
        hub = await self.start(key, n)
        self.running.append(hub)
        try:
            run.start_s = hub.start_s
            for note in hub.notes:
                self.note(f"{label}: {note}")
            say(f"  ready in {hub.start_s:.2f} s (API on :{hub.port})")
            await self.measure(hub, n, run, with_root=with_root, last=last)
        finally:
            run.cpu_total_s = hub.cpu()
            hub.proc.stop(timeout=30)
            self.running.remove(hub)
            log = hub.log_text()
            run.findings = hubs.jupyterhub_findings(log) if key == "jh" else hubs.fleethub_findings(log)
            for f in run.findings:
                say(f"  {f}")

    async def start(self, key: str, n: int) -> Hub:
        """A fresh hub; one retry when it does not come up (its log is kept in the work dir)."""
        for attempt in (1, 2):
            self.started += 1
            where = self.workdir / f"{key}-{n}-{self.started}"
            try:
                return await (hubs.start_jupyterhub(where, self.chp) if key == "jh" else hubs.start_fleethub(where))
            except BenchError as exc:
                if attempt == 2:
                    raise
                say(f"  ! did not start, retrying once: {str(exc)[:1500]}")
                self.note(f"{key} at {n:,} users: first start failed ({str(exc).splitlines()[0][:200]})")
        raise AssertionError("unreachable")

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    async def measure(self, hub: Hub, n: int, run: HubRun, *, with_root: bool, last: bool) -> None:
        await wait_quiet(self.plan.quiet_wait)
        run.batch = b = await create_users(hub, n)
        probes = "; ".join(f"{p.path}: {p.answered}/{p.sent} answered, max {p.max_ms:.0f} ms, "
                           f"longest without answer {p.longest_gap_s:.2f} s" for p in b.probes)
        say(f"  1. POST {n:,} users: {b.seconds:.2f} s ({n / b.seconds:,.0f} users/s, hub CPU {b.cpu_s:.1f} s; "
            f"others on the machine {b.foreign_cpu_s:.1f} CPU-s); {probes}")
        if not last and b.foreign_cpu_s > report.NOISE_SHARE * b.seconds:
            raise Disturbed(f"others used {b.foreign_cpu_s:.1f} CPU-s during the batch")
        for _ in range(WALKS):
            run.walks.append(w := await walk_users(hub))
            if w.items != w.total or w.total != n + 1:
                run.errors.append(f"page walk: {w.items} items over {w.pages} pages, total {w.total}, "
                                  f"expected {n + 1}")
            for note in w.notes:
                self.note(f"{hub.label}: {note}")
        say(f"  2. page walk: {', '.join(f'{w.seconds * 1000:.0f} ms' for w in run.walks)} "
            f"({run.walks[0].pages} pages, {run.walks[0].items} users)")
        script = lua_script(self.workdir / f"user_get_{n}.lua", n)
        for kind, token in (("generated", hub.admin_token), ("service", hub.service_token)):
            status = await check_token(hub, token)
            if status != 200:
                run.reads[kind] = f"{kind} token refused: {status}"
                say(f"  3. GET /hub/api/users/<name>, {kind} token: refused ({status}), skipped")
                continue
            r = await self.load(hub, script, token)
            run.reads[kind] = r
            say(f"  3. GET /hub/api/users/<name>, {kind} token: {r.wrk.rps:,.0f} req/s, p50 {r.wrk.p50_ms:.1f} ms, "
                f"p99 {r.wrk.p99_ms:.1f} ms, hub CPU {cpu_text(r)}{bad(r)}")
        if with_root:
            run.root = r = await self.load(hub, lua_script(self.workdir / "root.lua", None), None)
            say(f"  4. GET /hub/api/: {r.wrk.rps:,.0f} req/s, p50 {r.wrk.p50_ms:.2f} ms, p99 {r.wrk.p99_ms:.2f} ms, "
                f"hub CPU {cpu_text(r)}{bad(r)}")

    async def load(self, hub: Hub, script: Path, token: str | None) -> LoadResult:
        """A warmup and a measured wrk run; measured again (up to RETRIES times) while others disturbed it."""
        best: LoadResult | None = None
        for attempt in range(1 + RETRIES):
            await wait_quiet(self.plan.quiet_wait)
            if self.plan.warmup > 0:
                await wrk(hub, script, token=token, duration=self.plan.warmup)
            r = await wrk(hub, script, token=token, duration=self.plan.duration)
            if best is None or r.foreign_cpu_s < best.foreign_cpu_s:
                best = r
            if best.foreign_cpu_s <= report.NOISE_SHARE * best.wrk.seconds:
                break
            if attempt < RETRIES:
                say(f"     others used {r.foreign_cpu_s:.1f} CPU-s meanwhile: measuring again")
        assert best is not None
        return best


async def wait_quiet(limit: float, window: float = 2.0, threshold: float = 0.15) -> None:
    """Wait (at most `limit` s) for a `window` in which other processes use under `threshold` of a core."""
    if limit <= 0:
        return
    deadline = time.monotonic() + limit
    said = False
    while True:
        others, t = Others(), time.monotonic()
        await asyncio.sleep(window)
        used = others.used() / (time.monotonic() - t)
        if used < threshold or time.monotonic() >= deadline:
            if said:
                say(f"     machine {'quiet' if used < threshold else 'still busy'}: {used:.0%} of a core in use")
            return
        if not said:
            say(f"     machine busy ({used:.0%} of a core in use by others): waiting up to {limit:.0f} s for quiet")
            said = True


def cpu_text(r: LoadResult) -> str:
    parts = ", ".join(f"{k} {v:,.0f}" for k, v in r.cpu_us_by_part.items() if v >= 1)
    return f"{r.cpu_us_per_req or 0:,.0f} µs/request ({parts}); others on the machine {r.foreign_cpu_s:.1f} CPU-s"


def bad(r: LoadResult) -> str:
    w = r.wrk
    return f" (! {w.non2xx} non-2xx, {w.errors} socket errors)" if w.non2xx or w.errors else ""


def as_json(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: as_json(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): as_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [as_json(v) for v in obj]
    return obj


def parse_args() -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 users only, 3 s wrk runs (a smoke test)")
    parser.add_argument("--users", default=None,
                        help="comma-separated user counts, one fresh pair of hubs each (default 2000,10000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of each measured wrk run (10; quick: 3)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of wrk before each run (2; quick: 1)")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="before each timed step, wait up to this many seconds for a quiet machine "
                             "(default 120; 0: never)")
    parser.add_argument("--out", type=Path, default=None, help="write the report as markdown to this file")
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = parser.parse_args()
    sizes = [int(x.replace("_", "")) for x in args.users.split(",")] if args.users else (
        [2000] if args.quick else [2000, 10_000])
    plan = Plan(sizes=sizes, duration=args.duration or (3.0 if args.quick else 10.0),
                warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0), quick=args.quick,
                quiet_wait=args.quiet_wait)
    return plan, args


def main() -> int:
    plan, args = parse_args()
    loadgen.wrk_binary()
    jh_version = hubs.ensure_jupyterhub()
    chp = hubs.ensure_chp()
    machine = hubs.versions(jh_version, chp)
    workdir = Path(tempfile.mkdtemp(prefix="fleethub-bench-api-"))
    bench = Bench(plan, workdir, chp)
    say(f"fleethub API vs JupyterHub {jh_version} (sqlite): users {', '.join(f'{n:,}' for n in plan.sizes)}; "
        f"wrk {plan.duration:.0f} s after {plan.warmup:.0f} s warmup; work dir {workdir}")
    t0 = time.perf_counter()
    interrupted = False

    try:
        asyncio.run(until_sigterm(bench.run, bench.cleanup))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        say("\ninterrupted: stopping every process")
    finally:
        bench.cleanup()
    elapsed = time.perf_counter() - t0
    if interrupted:
        say(f"logs kept in {workdir}")
        return 130
    text = report.render(bench.runs, machine=machine, plan=plan, notes=bench.notes, elapsed=elapsed)
    say("\n" + text)
    if args.out is not None:
        args.out.write_text(text + "\n")
        say(f"\nreport written to {args.out}")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine, "plan": as_json(plan), "notes": bench.notes,
                                         "runs": as_json(bench.runs)}, indent=2, default=str))
        say(f"figures written to {args.json}")
    errors = any(r.errors for by in bench.runs.values() for r in by.values())
    if errors or args.keep:
        say(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
