"""The report of bench/api/run.py: one markdown table per user count, the goals (PASS/MISS), findings."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from figures import fmt
from workload import LoadResult, pct

STALL_MS = 250.0  # a probe slower than this during the batch counts as a stall (5 probe intervals)
READ_RATIO, READ_P99_MS = 5.0, 10.0
BATCH_RATIO, WALK_RATIO = 10.0, 2.0
PAGE_P99_MS = 50.0


@dataclass
class Row:
    figure: str
    better: str  # "higher" | "lower" | ""
    jh: Any = None
    fh: Any = None


def ratio(row: Row) -> float | None:
    """> 1 when fleethub is better: fleethub/JupyterHub for throughput, JupyterHub/fleethub for times."""
    if not isinstance(row.jh, (int, float)) or not isinstance(row.fh, (int, float)):
        return None
    if row.better == "higher" and row.jh > 0:
        return row.fh / row.jh
    if row.better == "lower" and row.fh > 0:
        return row.jh / row.fh
    return None


def _get(run: Any, *path: str) -> Any:
    x = run
    for p in path:
        if x is None:
            return None
        x = x.get(p) if isinstance(x, dict) else getattr(x, p, None)
    return x


def _walk_s(run: Any) -> float | None:
    return statistics.median(w.seconds for w in run.walks) if run is not None and run.walks else None


def _first_walk(run: Any) -> float | None:
    return run.walks[0].seconds if run is not None and run.walks else None


def _pages(run: Any) -> list[float]:
    return [t for w in run.walks for t in w.page_ms] if run is not None else []


def _read(run: Any, kind: str) -> LoadResult | str | None:
    return run.reads.get(kind) if run is not None else None


def _rf(read: LoadResult | str | None, f: str) -> Any:
    if isinstance(read, str):
        return read if f == "rps" else None
    if read is None:
        return None
    if f.startswith("cpu:"):
        return read.cpu_us_by_part.get(f[4:])
    if f == "foreign_cpu_s":
        return read.foreign_cpu_s
    return read.cpu_us_per_req if f == "cpu" else getattr(read.wrk, f)


def _split(x: Any, attr: str) -> str | None:
    parts = getattr(x, attr, None) if x is not None and not isinstance(x, str) else None
    if not parts:
        return None
    return f"{fmt(parts.get('api', 0.0))} / {fmt(parts.get('postgres', 0.0))}"


def rows_for(jh: Any, fh: Any) -> list[Row]:
    rows = [Row("hub start → API answers, s", "lower", _get(jh, "start_s"), _get(fh, "start_s"))]
    b_jh, b_fh = _get(jh, "batch"), _get(fh, "batch")
    n = _get(b_jh, "users") or _get(b_fh, "users")
    rows += [
        Row(f"1. create {fmt(n)} users, one POST: s", "lower", _get(b_jh, "seconds"), _get(b_fh, "seconds")),
        Row("   users created per s", "higher", n / b_jh.seconds if b_jh else None, n / b_fh.seconds if b_fh else None),
        Row("   hub CPU-s during the POST (process tree)", "lower", _get(b_jh, "cpu_s"), _get(b_fh, "cpu_s")),
        Row("      of which the API process (JupyterHub: the hub) / PostgreSQL", "",
            _split(b_jh, "cpu_by_part"), _split(b_fh, "cpu_by_part")),
        Row("   noise: other processes' CPU-s meanwhile", "", _get(b_jh, "foreign_cpu_s"), _get(b_fh, "foreign_cpu_s")),
    ]
    for i, label in enumerate(("GET /hub/api/", "GET /hub/api/users/admin")):
        p_jh = b_jh.probes[i] if b_jh else None
        p_fh = b_fh.probes[i] if b_fh else None
        rows += [
            Row(f"   probe {label} every 50 ms: idle p50 ms", "lower",
                _get(p_jh, "idle_p50_ms"), _get(p_fh, "idle_p50_ms")),
            Row("      during the POST: answered / sent", "",
                f"{p_jh.answered} / {p_jh.sent}" if p_jh else None, f"{p_fh.answered} / {p_fh.sent}" if p_fh else None),
            Row("      during the POST: max latency ms", "lower", _get(p_jh, "max_ms"), _get(p_fh, "max_ms")),
            Row("      during the POST: longest time without an answer, s", "lower",
                _get(p_jh, "longest_gap_s"), _get(p_fh, "longest_gap_s")),
        ]
    pj, pf = _pages(jh), _pages(fh)
    pages = (jh.walks[0].pages if jh is not None and jh.walks
             else fh.walks[0].pages if fh is not None and fh.walks else None)
    rows += [
        Row(f"2. walk all users, {fmt(pages)} pages of 200 (median of 3): s", "lower", _walk_s(jh), _walk_s(fh)),
        Row("   first walk (right after the batch): s", "lower", _first_walk(jh), _first_walk(fh)),
        Row("   per page, mean ms", "lower",
            statistics.fmean(pj) if pj else None, statistics.fmean(pf) if pf else None),
        Row("   per page, p99 (max) ms", "lower", pct(pj, 99), pct(pf, 99)),
    ]
    for kind, label in (("generated", "hub-generated token"), ("service", "service api_token (config)")):
        r_jh, r_fh = _read(jh, kind), _read(fh, kind)
        rows += [
            Row(f"3. GET /hub/api/users/<name>, c=16, {label}: req/s", "higher", _rf(r_jh, "rps"), _rf(r_fh, "rps")),
            Row("   p50 ms", "lower", _rf(r_jh, "p50_ms"), _rf(r_fh, "p50_ms")),
            Row("   p99 ms", "lower", _rf(r_jh, "p99_ms"), _rf(r_fh, "p99_ms")),
            Row("   hub CPU µs per request", "lower", _rf(r_jh, "cpu"), _rf(r_fh, "cpu")),
            Row("      of which the API process (JupyterHub: the hub) / PostgreSQL", "",
                _split(r_jh, "cpu_us_by_part"), _split(r_fh, "cpu_us_by_part")),
            Row("   noise: other processes' CPU-s meanwhile", "",
                _rf(r_jh, "foreign_cpu_s"), _rf(r_fh, "foreign_cpu_s")),
        ]
    root_jh, root_fh = _get(jh, "root"), _get(fh, "root")
    if root_jh is not None or root_fh is not None:
        rows += [
            Row("4. GET /hub/api/, c=16: req/s", "higher", _rf(root_jh, "rps"), _rf(root_fh, "rps")),
            Row("   p50 ms", "lower", _rf(root_jh, "p50_ms"), _rf(root_fh, "p50_ms")),
            Row("   p99 ms", "lower", _rf(root_jh, "p99_ms"), _rf(root_fh, "p99_ms")),
            Row("   hub CPU µs per request", "lower", _rf(root_jh, "cpu"), _rf(root_fh, "cpu")),
            Row("   noise: other processes' CPU-s meanwhile", "", _rf(root_jh, "foreign_cpu_s"),
                _rf(root_fh, "foreign_cpu_s")),
        ]
    return rows


def table(rows: list[Row]) -> str:
    out = ["| figure | better | JupyterHub | fleethub | ratio (>1: fleethub better) |", "|---|---|---:|---:|---:|"]
    for row in rows:
        r = ratio(row)
        shown = "–" if r is None else f"{r:.2f}×"
        out.append(f"| {row.figure} | {row.better} | {fmt(row.jh)} | {fmt(row.fh)} | {shown} |")
    return "\n".join(out)


def goals_for(n: int, jh: Any, fh: Any) -> list[tuple[str, str, str]]:
    """(PASS|MISS|n/a, goal, the figures it was judged on)."""
    out = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    b_jh, b_fh = _get(jh, "batch"), _get(fh, "batch")
    if b_jh and b_fh:
        r = b_jh.seconds / b_fh.seconds
        worst = max(p.max_ms or 0 for p in b_fh.probes)
        failed = sum(p.failed for p in b_fh.probes)
        ok = r >= BATCH_RATIO and worst <= STALL_MS and failed == 0
        goal = (f"{n:,}-user batch creation ≥{BATCH_RATIO:.0f}× faster, other requests not stalled "
                f"(probe max ≤ {STALL_MS:.0f} ms)")
        why = (f"{b_jh.seconds:.2f} s / {b_fh.seconds:.2f} s = {r:.1f}×; fleethub probe max {worst:.0f} ms, "
               f"{failed} failed (JupyterHub: max {max(p.max_ms or 0 for p in b_jh.probes):,.0f} ms)")
        out.append((verdict(ok), goal, why))
    else:
        out.append(("n/a", f"{n:,}-user batch creation ≥{BATCH_RATIO:.0f}× faster", "not measured on both"))
    w_jh, w_fh = _walk_s(jh), _walk_s(fh)
    if w_jh and w_fh:
        r = w_jh / w_fh
        out.append((verdict(r >= WALK_RATIO), f"page walk at {n:,} users ≥{WALK_RATIO:.0f}× faster",
                    f"{w_jh * 1000:.0f} ms / {w_fh * 1000:.0f} ms = {r:.1f}×"))
        p99 = pct(_pages(fh), 99)
        out.append((verdict(p99 is not None and p99 <= PAGE_P99_MS),
                    f"G7: GET /hub/api/users?limit=200 p99 ≤ {PAGE_P99_MS:.0f} ms at {n:,} users",
                    f"fleethub {fmt(p99)} ms"))
    for kind, label in (("generated", "hub-generated token"), ("service", "service token")):
        r_jh, r_fh = _read(jh, kind), _read(fh, kind)
        goal = f"token read ({label}) at {n:,} users ≥{READ_RATIO:.0f}× JupyterHub req/s, p99 < {READ_P99_MS:.0f} ms"
        if isinstance(r_fh, str):
            out.append(("MISS", goal, f"fleethub: {r_fh}"))
        elif isinstance(r_jh, LoadResult) and isinstance(r_fh, LoadResult):
            r = r_fh.wrk.rps / r_jh.wrk.rps
            ok = r >= READ_RATIO and r_fh.wrk.p99_ms < READ_P99_MS and not r_fh.wrk.non2xx and not r_fh.wrk.errors
            why = f"{r_fh.wrk.rps:,.0f} / {r_jh.wrk.rps:,.0f} req/s = {r:.1f}×; fleethub p99 {r_fh.wrk.p99_ms:.1f} ms"
            out.append((verdict(ok), goal, why))
        else:
            out.append(("n/a", goal, f"JupyterHub: {r_jh if isinstance(r_jh, str) else 'not measured'}"))
    return out


NOISE_SHARE = 0.10  # of one core: above this, other processes' work is reported next to the figure


def noise(runs: dict[int, dict[str, Any]]) -> list[str]:
    """Figures taken while other processes used more than NOISE_SHARE of a core."""
    out = []
    for n, by in runs.items():
        for key, r in by.items():
            who = "JupyterHub" if key == "jh" else "fleethub"
            timed: list[tuple[str, float, float]] = []
            if r.batch is not None:
                timed.append(("batch creation", r.batch.foreign_cpu_s, r.batch.seconds))
            for kind, read in r.reads.items():
                if isinstance(read, LoadResult):
                    timed.append((f"token read ({kind})", read.foreign_cpu_s, read.wrk.seconds))
            if r.root is not None:
                timed.append(("GET /hub/api/", r.root.foreign_cpu_s, r.root.wrk.seconds))
            for what, cpu, secs in timed:
                if secs > 0 and cpu / secs > NOISE_SHARE:
                    out.append(f"noise: {who} at {n:,} users, {what}: other processes used {cpu:.1f} CPU-s in "
                               f"{secs:.1f} s ({cpu / secs:.0%} of a core) — the figure is understated")
    return out


NOTES = """\
- Both hubs are reached on their API process directly (JupyterHub: its hub port, the proxy bypassed;
  fleethub: the api replica's own port), so no proxy is measured. One hub runs at a time, each fresh
  for every user count (created by the batch itself), and the client shares the machine's cores.
- JupyterHub: sqlite (the baseline's default), DummyAuthenticator, log level INFO (every request is
  logged); its CHP is started by the hub but idle. fleethub: `fleethub up` (embedded NATS and
  PostgreSQL, one api replica, uvicorn without access log).
- Token reads and `GET /hub/api/` use wrk -t2 -c16 --latency (closed loop), a random bench user per
  request (Lua), after a warmup run; hub CPU is utime+stime (with reaped children) of the hub's whole
  process tree during the measured run (fleethub: every service, NATS and PostgreSQL; JupyterHub: the
  hub and its CHP).
- Noise: CPU used meanwhile by processes that are neither the benchmark's nor kernel threads; a wrk
  figure disturbed by over 10 % of a core is measured again (twice at most, the least disturbed kept),
  a disturbed batch creation is redone once on a fresh hub.
- The batch probers each keep one connection and send every 50 ms (a late answer skips missed
  ticks); "longest time without an answer" is measured inside the POST's window."""


def render(runs: dict[int, dict[str, Any]], *, machine: dict[str, str], plan: Any, notes: list[str],
           elapsed: float) -> str:
    m = machine
    out = [f"## fleethub API vs JupyterHub {m['jupyterhub']}", "",
           (f"{m['nproc']} × {m['cpu']}, {m['mem']}, Linux {m['kernel']}; {m['date']}. Python {m['python']} "
           f"(JupyterHub's venv: {m['jupyterhub_python']}, sqlite {m['sqlite']}); configurable-http-proxy "
           f"{m['chp']} on node {m['node']}; {m['wrk']}; fleethub {m['fleethub']}. Run took {elapsed:.0f} s"
           f"{' (--quick)' if plan.quick else ''}; "
           f"wrk {plan.duration:.0f} s per figure after {plan.warmup:.0f} s warmup.")]
    goals: list[tuple[str, str, str]] = []
    for n, by in runs.items():
        jh, fh = by.get("jh"), by.get("fh")
        out += ["", f"### {n:,} users", "", table(rows_for(jh, fh))]
        goals += goals_for(n, jh, fh)
    out += ["", "### Goals (reported, never asserted)", ""]
    out += [f"- **{v}** {g}: {why}" for v, g, why in goals]
    findings = [(n, key, f) for n, by in runs.items() for key, r in by.items() for f in r.findings + r.errors]
    found = [*notes, *(f"{'JupyterHub' if key == 'jh' else 'fleethub'} at {n:,} users: {f}" for n, key, f in findings)]
    for n, by in runs.items():
        for key, r in by.items():
            for kind, read in r.reads.items():
                if isinstance(read, LoadResult) and (read.wrk.non2xx or read.wrk.errors):
                    found.append(f"{key} at {n:,} users, {kind} token: {read.wrk.non2xx} non-2xx, "
                                 f"{read.wrk.errors} socket errors")
    found += noise(runs)
    if found:
        out += ["", "### Findings and errors", ""] + [f"- {f}" for f in found]
    out += ["", "### How it was measured", "", NOTES]
    return "\n".join(out)
