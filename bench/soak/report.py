"""The soak's report: a markdown page (and the raw figures as JSON beside it)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from sampler import growth

MIB = 1024 * 1024
GRACE = 10.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _log_counts(logs: Path) -> dict[str, tuple[int, int]]:
    """Per service log: (lines with ERROR, tracebacks)."""
    out = {}
    for log in sorted(logs.glob("*.log")):
        text = log.read_text(errors="replace")
        out[log.stem] = (sum(1 for line in text.splitlines() if " ERROR " in line or "ERROR:" in line),
                         text.count("Traceback (most recent call last)"))
    return out


def _growth_rows(soak: Any, warmup: float) -> list[dict[str, Any]]:
    """Per slot, the instance observed longest after its baseline (the run's warm-up, or 60 s after a restart)."""
    best: dict[str, dict[str, Any]] = {}
    for series in soak.sampler_series.values():
        g = growth(series, max(warmup, series.started + 60))
        if g is not None and (series.slot not in best or g["minutes"] > best[series.slot]["minutes"]):
            best[series.slot] = g
    return [best[k] for k in sorted(best)]


def _consumers(soak: Any, warmup: float) -> dict[str, tuple[int, int, int, int]]:
    """Per stream: consumers at the warm-up's end, at the churn's end, min and max after warm-up."""
    samples = [(t, c) for t, c in soak.consumers if "error" not in c]
    after = [(t, c) for t, c in samples if t >= warmup] or samples
    end_t = soak.final.get("churn_end", float("inf"))
    during = [(t, c) for t, c in after if t <= end_t] or after
    out = {}
    if not during:
        return out
    for stream in sorted({s for _, c in during for s in c}):
        values = [c.get(stream, 0) for _, c in during]
        out[stream] = (values[0], values[-1], min(values), max(values))
    return out


def write_report(args: argparse.Namespace, soak: Any, *, started: str, workdir: Path) -> str:
    """Write `args.out` (markdown) and `args.out` with .json, and return the markdown."""
    tr = soak.tracker
    st = soak.stats
    c = st.counts
    lines: list[str] = []
    add = lines.append
    minutes = soak.final.get("churn_end", 0) / 60
    episodes = tr.episodes()
    persistent = [e for e in episodes if e.persistent_at is not None]
    growth_rows = _growth_rows(soak, args.warmup)
    consumers = _consumers(soak, args.warmup)
    five = Counter({k: v for k, v in st.requests.items() if k[1] >= 500})
    conv = tr.convergence()
    clean = [k["clean_after"] for k in conv if k["clean_after"] is not None]
    new_clean = [k["new_clean_after"] for k in conv if k["new_clean_after"] is not None]

    add("# Soak: churn, kill -9 and an oracle (bench/soak)")
    add("")
    add(f"Run {started}, churn {minutes:.1f} min (`python bench/soak/run.py --minutes {args.minutes:g} "
        f"--users {args.users} --kill-every {args.kill_every}`), warm-up {args.warmup:.0f} s, oracle every "
        f"{args.check_every:.0f} s. Load average at the end: {soak.final.get('loadavg') or _loadavg()} on "
        f"{os.cpu_count()} cores." + (f" {args.note}" if getattr(args, "note", "") else ""))
    add("")
    layout = soak.layout["layout"]
    add("Stack: " + ", ".join(f"{n} {s}" for s, n in layout.items()) + " (real processes, `python -m fleethub "
        "run`), embedded NATS (no auth) and PostgreSQL; user servers: `bench/soak/userserver.py` (HTTP + websocket "
        f"echo); culler timeout {args.culler_timeout:.0f} s; servers held {args.hold} s, "
        f"{args.busy_share:.0%} of holds with a websocket open through a proxy node.")
    add("")
    add("## Verdict")
    add("")
    add("| criterion | result | figure |")
    add("|---|---|---|")
    add(f"| no oracle finding persists past {GRACE:.0f} s after the last kill | "
        f"{'PASS' if not persistent else 'MISS'} | {len(persistent)} persistent of {len(episodes)} findings |")
    final_counts = soak.final.get("final_counts", {})
    settled = not soak.final.get("final_findings") and final_counts.get("processes") == 0
    add(f"| every server stopped, everything agrees after the churn | {'PASS' if settled else 'MISS'}"
        f" | settled {soak.final.get('settled_after', float('nan')):.0f} s after the churn; final counts "
        f"{ {k: v for k, v in soak.final.get('final_counts', {}).items() if k != 'consumers'} } |")
    worst_rss = max(growth_rows, key=lambda g: g["rss_pct"], default=None)
    worst_fd = max(growth_rows, key=lambda g: g["fd_pct"], default=None)
    if worst_rss and worst_fd:
        add(f"| RSS of each service process grows < 10 % after warm-up | "
            f"{'PASS' if worst_rss['rss_pct'] < 10 else 'MISS'} | worst {worst_rss['slot']} "
            f"{worst_rss['rss_pct']:+.1f} % over {worst_rss['minutes']:.1f} min |")
        add(f"| open fds of each service process grow < 10 % after warm-up | "
            f"{'PASS' if worst_fd['fd_pct'] < 10 else 'MISS'} | worst {worst_fd['slot']} {worst_fd['fd_pct']:+.1f} % "
            f"({worst_fd['fd0']} → {worst_fd['fd1']}) |")
    stable = all(end <= start + 2 and mx <= start + 10 for start, end, _, mx in consumers.values())
    add(f"| JetStream consumer counts stable | {'PASS' if stable else 'MISS'} | "
        + ", ".join(f"{s} {a}→{b} (max {mx})" for s, (a, b, _, mx) in consumers.items()) + " |")
    add(f"| no 5xx answer | {'PASS' if not five else 'MISS'} | {sum(five.values())} of "
        f"{sum(st.requests.values())} API answers |")
    add("")
    add("## Churn")
    add("")
    add("| what | count |")
    add("|---|---|")
    for key in sorted(c):
        add(f"| {key} | {c[key]} |")
    if st.ready_seconds:
        add(f"| POST → ready in the API, p50 / p95 / max (s) | {statistics.median(st.ready_seconds):.2f} / "
            f"{_pct(st.ready_seconds, 0.95):.2f} / {max(st.ready_seconds):.2f} |")
    if st.stop_seconds:
        add(f"| DELETE → gone in the API, p50 / p95 / max (s) | {statistics.median(st.stop_seconds):.2f} / "
            f"{_pct(st.stop_seconds, 0.95):.2f} / {max(st.stop_seconds):.2f} |")
    add("")
    add("## Kills")
    add("")
    per_service: Counter[str] = Counter(slot.rsplit("-", 1)[0] for _, slot, _ in tr.kills)
    unexpected = [(name, round(t - soak.t0, 1), code) for name, exits in soak.slots for t, code, pid in exits
                  if pid not in soak.killed_pids]
    add(f"{len(tr.kills)} SIGKILLs: " + ", ".join(f"{k} {v}" for k, v in sorted(per_service.items()))
        + f". Exits not caused by a kill: {unexpected or 'none'}.")
    add("")
    if conv:
        add(f"Convergence after a kill (oracle every {args.check_every:.0f} s, so figures are upper bounds at that "
            f"resolution): no finding at all after p50 {statistics.median(clean) if clean else float('nan'):.0f} s, "
            f"max {max(clean) if clean else float('nan'):.0f} s ({len(clean)} of {len(conv)} kills reached a "
            f"clean check before the next kill); no finding newer than the kill after max "
            f"{max(new_clean) if new_clean else float('nan'):.0f} s.")
        add("")
        add("| kill at (s) | process | clean after (s) | no new finding after (s) | next kill after (s) |")
        add("|---|---|---|---|---|")
        for k in conv:
            add(f"| {k['t']:.0f} | {k['slot']} | {_num(k['clean_after'])} | {_num(k['new_clean_after'])} | "
                f"{_num(k['next_kill_after'])} |")
        add("")
    add("## Oracle findings")
    add("")
    add(f"{len(tr.checks)} checks, {sum(1 for _, f, _ in tr.checks if f)} with findings.")
    add("")
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for e in episodes:
        by_kind[e.kind].append(e)
    add("| finding | episodes | persistent | longest (s, first to last check seen) |")
    add("|---|---|---|---|")
    for kind, eps in sorted(by_kind.items()):
        add(f"| {kind} | {len(eps)} | {sum(1 for e in eps if e.persistent_at is not None)} | "
            f"{max(e.last - e.first for e in eps):.0f} |")
    add("")
    away = [e for e in episodes if (lk := tr.last_kill(e.first)) is None or e.first - lk >= 30]
    if away:
        kinds = Counter(e.kind for e in away)
        add(f"Findings first seen 30 s or more after the last kill (so not a kill being healed; a race of the hub's "
            f"own, or a read racing the churn): {len(away)} — "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ". Examples:")
        add("")
        for e in away[:12]:
            add(f"- {e.first:.0f} s ({e.checks} check{'s' if e.checks > 1 else ''}): {e.key}: {e.detail}")
        add("")
    if persistent:
        add("Persistent findings:")
        add("")
        for e in persistent[:30]:
            add(f"- {e.key}: seen {e.first:.0f}–{e.last:.0f} s ({e.checks} checks); {e.detail}")
        add("")
    if soak.final.get("final_findings"):
        add("Findings left after the churn stopped: " + "; ".join(soak.final["final_findings"][:20]))
        add("")
    add("## RSS and open fds per service process")
    add("")
    add("Baseline: the first sample after the warm-up (or 60 s after a restart); end: the last sample of the same "
        "process. Per slot, the process instance observed longest.")
    add("")
    add("| process | pid | minutes | RSS MiB baseline → end (max) | RSS growth | fds baseline → end (max) "
        "| fd growth |")
    add("|---|---|---|---|---|---|---|")
    for g in growth_rows:
        add(f"| {g['slot']} | {g['pid']} | {g['minutes']:.1f} | {g['rss0'] / MIB:.1f} → {g['rss1'] / MIB:.1f} "
            f"({g['rss_max'] / MIB:.1f}) | {g['rss_pct']:+.1f} % | {g['fd0']} → {g['fd1']} ({g['fd_max']}) | "
            f"{g['fd_pct']:+.1f} % |")
    add("")
    add("## JetStream consumers per stream")
    add("")
    marks = [m for m in (60, 180, 300, 600, 900, 1200, 1500, 1800, 2700, 3600)
             if m <= soak.final.get("churn_end", 0)]
    add("| stream | after warm-up | end of churn | min | max | at " + " / ".join(f"{m // 60} min" for m in marks)
        + " |")
    add("|---|---|---|---|---|---|")
    for stream, (a, b, lo, hi) in consumers.items():
        at = [next((cn.get(stream, "?") for t, cn in soak.consumers if t >= m and "error" not in cn), "?")
              for m in marks]
        add(f"| {stream} | {a} | {b} | {lo} | {hi} | {' / '.join(str(v) for v in at)} |")
    add("")
    add("## Errors")
    add("")
    add("| endpoint | status | count |")
    add("|---|---|---|")
    for (endpoint, status), n in sorted(st.requests.items()):
        if status >= 500:
            add(f"| {endpoint} | {status} | {n} |")
    add("")
    errors = [e for e in st.errors if e.get("status")]
    if errors:
        add("First 5xx answers (seconds into the run, and the kills just before):")
        add("")
        for e in errors[:15]:
            near = [f"{s}@{t:.0f}" for t, s, _ in tr.kills if 0 <= e["t"] - t <= 15]
            add(f"- {e['t']:.0f} s {e['endpoint']} {e['status']} via {e.get('node')}: `{e['body'][:160]}` "
                f"(kills in the 15 s before: {', '.join(near) or 'none'})")
        add("")
    others = [e for e in st.errors if not e.get("status")]
    if others:
        add(f"Other failures ({len(others)}): " + "; ".join(f"{e['t']:.0f} s {e['endpoint']}: {e['body'][:100]}"
                                                            for e in others[:10]))
        add("")
    add("Service logs (ERROR lines, tracebacks): " + ", ".join(
        f"{name} {e}/{tb}" for name, (e, tb) in _log_counts(workdir / "logs").items()) + f". Logs: {workdir}/logs.")
    add("")
    doc = "\n".join(lines)
    args.out.write_text(doc)
    raw = {"kills": tr.kills, "convergence": conv, "checks": [(t, [str(f) for f in fs], {k: v for k, v in cn.items()})
                                                             for t, fs, cn in tr.checks],
           "episodes": [e.__dict__ for e in episodes], "growth": growth_rows, "consumers": soak.consumers,
           "requests": [[k[0], k[1], v] for k, v in st.requests.items()], "counts": dict(c), "errors": st.errors,
           "final": soak.final, "series": {str(p): s.__dict__ for p, s in soak.sampler_series.items()}}
    args.out.with_suffix(".json").write_text(json.dumps(raw, default=str))
    return doc


def _num(value: float | None) -> str:
    return "—" if value is None else ("∞" if value == float("inf") else f"{value:.0f}")
