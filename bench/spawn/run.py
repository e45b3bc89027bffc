"""Spawn storms, fleethub against JupyterHub 6.1, side by side in one run (not in CI; never asserts).

Each run starts each hub fresh (JupyterHub from bench/api's venv with configurable-http-proxy from
bench/proxy's cache, SimpleLocalProcessSpawner; `fleethub up` with embedded NATS and PostgreSQL), one hub
at a time, both with tests/support/fake_singleuser.py as the user server, and measures:

 1. the exec floor: the same N commands started at once by the benchmark, until each answers;
 2. N concurrent `POST /hub/api/users/<u>/server` (through the hub's proxy) → time until every POST is
    answered, until all answered 201, and until every server answers through the proxy; ratio to the floor;
 3. on a fresh hub, a storm of M spawn POSTs fired at once: time to answer all, accepted / 429 (with
    Retry-After) / 5xx, time until every accepted server is ready, and the p50/p99 of a prober's
    `GET /hub/api/users/probe` during the storm against idle.

Prints the markdown table (median [range] per hub over runs, ratio fleethub/JupyterHub) and writes it
(`--out`, default bench/spawn/results.md) and every figure as JSON (`--json`).

    python bench/spawn/run.py [--runs 3] [--spawns 50] [--storm 500] [--storm-limit N] [--only fh|jh]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (str(ROOT / "bench" / "proxy"), str(ROOT / "bench" / "api"), str(ROOT), str(HERE)):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)

import contenders
import cpu
import floor
import hubs
import report
import storm
from hubs import Hub, say
from others import Others
from proctree import BenchError


async def _with_hub(key: str, workdir: Path, chp: str, mark: str, plan: argparse.Namespace,
                    users: list[str]) -> Hub:
    hub = await contenders.start(key, workdir, chp, mark, plan.storm_limit, plan.baseline,
                                 ("--processes",) if plan.processes else ())
    try:
        await contenders.create_users(hub, [*users, contenders.PROBE_USER])
    except BaseException:
        _stop(hub, mark)
        raise
    return hub


def _stop(hub: Hub, mark: str) -> list[str]:
    """Stop the hub (its tree, user servers included); kill any user server still carrying the mark."""
    hub.proc.stop(timeout=60)
    left = floor.kill_marked(mark)
    notes = hubs.jupyterhub_findings(hub.log_text()) if hub.key == "jh" else hubs.fleethub_findings(hub.log_text())
    if left:
        notes.append(f"{left} user servers outlived {hub.label} and were killed")
    return notes


async def one_hub(key: str, plan: argparse.Namespace, chp: str, workdir: Path, run: int) -> dict[str, Any]:
    mark = uuid.uuid4().hex
    out: dict[str, Any] = {"notes": []}
    names = [f"c{i}" for i in range(plan.spawns)]
    singles = [f"one{i}" for i in range(plan.singles)]
    hub = await _with_hub(key, workdir / f"{key}-{run}-spawns", chp, mark, plan, names + singles)
    out["spawn_hub_start_s"] = hub.start_s
    try:
        await asyncio.sleep(plan.settle)
        if singles:
            say(f"  {hub.label}: {len(singles)} spawns one at a time")
            out["single_floor_s"] = [(await floor.exec_floor(1, mark)).all_s for _ in singles]
            out["singles"] = [asdict(await storm.concurrent_spawns(hub.proxy_port, hub.admin_token, [u]))
                              for u in singles]
        say(f"  {hub.label}: exec floor ({plan.spawns} at once)")
        out["floor"] = asdict(await floor.exec_floor(plan.spawns, mark))
        say(f"  {hub.label}: {plan.spawns} concurrent spawns")
        others, before = Others(), cpu.snapshot(hub.proc.pid)
        t = time.perf_counter()
        spawns = await storm.concurrent_spawns(hub.proxy_port, hub.admin_token, names)
        out["spawns_others_cores"] = others.used() / (time.perf_counter() - t)
        out["spawns_cpu"] = cpu.used(before, cpu.snapshot(hub.proc.pid))
        out["spawns"] = asdict(spawns)
        say(f"    floor {out['floor']['all_s']:.2f} s; all answered {spawns.all_answered_s:.2f} s, reachable "
            f"{spawns.all_reachable_s or float('nan'):.2f} s, statuses {spawns.statuses}; CPU s {out['spawns_cpu']}")
    finally:
        out["notes"] += _stop(hub, mark)
    if plan.storm:
        mark = uuid.uuid4().hex
        names = [f"s{i}" for i in range(plan.storm)]
        hub = await _with_hub(key, workdir / f"{key}-{run}-storm", chp, mark, plan, names)
        try:
            await asyncio.sleep(plan.settle)
            say(f"  {hub.label}: storm of {plan.storm}")
            others, before = Others(), cpu.snapshot(hub.proc.pid)
            t = time.perf_counter()
            result = await storm.storm(hub.proxy_port, hub.admin_token, names, contenders.PROBE_USER)
            out["storm_others_cores"] = others.used() / (time.perf_counter() - t)
            out["storm_cpu"] = cpu.used(before, cpu.snapshot(hub.proc.pid))
            out["storm"] = asdict(result)
            say(f"    answered in {result.all_answered_s:.2f} s {result.statuses}; all accepted ready "
                f"{result.all_running_s or float('nan'):.2f} s; prober p99 idle {result.probe('idle', 99) or 0:.1f} ms,"
                f" storm {result.probe('storm', 99) or 0:.1f} ms; CPU s {out['storm_cpu']}")
        finally:
            out["notes"] += _stop(hub, mark)
    return out


async def main_async(plan: argparse.Namespace) -> int:
    jh_version = hubs.ensure_jupyterhub() if "jh" in plan.hubs else "-"
    chp = hubs.ensure_chp() if "jh" in plan.hubs else ""
    workdir = Path(tempfile.mkdtemp(prefix="fleethub-bench-spawn-"))
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        for run in range(plan.runs):
            order = plan.hubs if run % 2 == 0 else list(reversed(plan.hubs))
            say(f"run {run + 1}/{plan.runs}: {' then '.join(order)}")
            record: dict[str, Any] = {}
            for key in order:
                try:
                    record[key] = await one_hub(key, plan, chp, workdir, run)
                except (BenchError, OSError, RuntimeError) as exc:
                    notes.append(f"run {run + 1}, {key}: failed: {str(exc)[:500]}")
                    say(f"  ! {exc}")
                    continue
                notes += [f"run {run + 1}, {key}: {n}" for n in record[key].pop("notes")]
            runs.append(record)
    finally:
        if not plan.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    machine = hubs.versions(jh_version, chp or "true")
    if plan.baseline is not None:
        machine["baseline"] = plan.baseline_commit
    limit_text = (f"configured to {plan.storm_limit} on both" if plan.storm_limit is not None
                  else "each hub's default (100 pending spawns on both)")
    text = report.render(runs, plan={"spawns": plan.spawns, "storm": plan.storm, "limit_text": limit_text,
                                     "command": "python bench/spawn/run.py " + shlex.join(sys.argv[1:])},
                         machine=machine, notes=notes)
    print(text)
    if plan.out:
        Path(plan.out).write_text(text)
    if plan.json:
        Path(plan.json).write_text(json.dumps({"machine": machine, "runs": runs, "notes": notes}, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--spawns", type=int, default=50, help="concurrent spawns (N)")
    parser.add_argument("--singles", type=int, default=5, help="spawns one at a time, on an idle hub")
    parser.add_argument("--storm", type=int, default=500, help="spawn requests of the storm (M); 0: no storm")
    parser.add_argument("--storm-limit", type=int, default=None,
                        help="concurrent_spawn_limit for both hubs (0: none); default: each hub's own")
    parser.add_argument("--only", choices=("fh", "jh"), help="one hub only (no ratios)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds a fresh hub idles before a timed step")
    parser.add_argument("--out", default=str(HERE / "results.md"), help="markdown output ('' for none)")
    parser.add_argument("--json", default="", help="every figure as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of another fleethub commit (git worktree), run as a third hub for a "
                             "before/after comparison in the same run")
    parser.add_argument("--processes", action="store_true",
                        help="run each fleethub as `fleethub up --processes` (one process per service)")
    plan = parser.parse_args()
    plan.hubs = [plan.only] if plan.only else ["fh", "jh"]
    if plan.baseline is not None:
        plan.baseline = plan.baseline.resolve()
        plan.hubs.insert(1, "fb")
        plan.baseline_commit = subprocess.run(["git", "-C", str(plan.baseline), "rev-parse", "--short", "HEAD"],
                                              capture_output=True, text=True, check=False).stdout.strip()
    return asyncio.run(main_async(plan))


if __name__ == "__main__":
    raise SystemExit(main())
