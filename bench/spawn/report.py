"""The markdown report of bench/spawn: per figure the median over runs and its range, per hub, and the ratio."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Run = dict[str, Any]  # {"fh": {...}, "jh": {...}} as run.py records them (JSON-able)
Getter = Callable[[dict[str, Any]], float | None]

HUBS = (("jh", "JupyterHub"), ("fb", "fleethub baseline"), ("fh", "fleethub"))


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d or d[p] is None:
            return None
        d = d[p]
    return d


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _pct(xs: list[float] | None, q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return float(s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))])


def values(runs: list[Run], key: str, get: Getter) -> list[float]:
    out = []
    for run in runs:
        if key in run and run[key] is not None:
            v = get(run[key])
            if v is not None:
                out.append(float(v))
    return out


def summary(xs: list[float], fmt: str) -> str:
    if not xs:
        return "—"
    med = statistics.median(xs)
    if len(xs) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} [{format(min(xs), fmt)}–{format(max(xs), fmt)}]"


def _med(xs: list[float] | None) -> float | None:
    return statistics.median(xs) if xs else None


def _hub_cpu(parts: dict[str, float] | None) -> float | None:
    return None if parts is None else sum(v for k, v in parts.items() if k != "user servers")


FIGURES: list[tuple[str, Getter, str, str]] = [
    # (label, getter, format, which direction is better)
    ("hub start → API answers (s)", lambda h: _get(h, "spawn_hub_start_s"), ".2f", "lower"),
    ("one spawn on an idle hub: exec floor of one server (s, median of the singles)",
     lambda h: _med(_get(h, "single_floor_s")), ".3f", "lower"),
    ("one spawn on an idle hub: POST → 201 (s, median)",
     lambda h: _med([x["all_answered_s"] for x in _get(h, "singles") or []]), ".3f", "lower"),
    ("one spawn on an idle hub: POST → reachable through the proxy (s, median)",
     lambda h: _med([x["all_reachable_s"] for x in _get(h, "singles") or [] if x["all_reachable_s"]]), ".3f",
     "lower"),
    ("exec floor: N servers started at once, all answering (s)", lambda h: _get(h, "floor", "all_s"), ".2f", "lower"),
    ("N concurrent POSTs: all answered (s)", lambda h: _get(h, "spawns", "all_answered_s"), ".2f", "lower"),
    ("N concurrent POSTs: all answered 201 (s; — if some were not 201)", lambda h: _get(h, "spawns", "all_201_s"),
     ".2f", "lower"),
    ("N concurrent POSTs: **all reachable through the proxy** (s)",
     lambda h: _get(h, "spawns", "all_reachable_s"), ".2f", "lower"),
    ("**reachable / exec floor** (goal for fleethub ≤ 1.5, stretch 1.25)",
     lambda h: _ratio(_get(h, "spawns", "all_reachable_s"), _get(h, "floor", "all_s")), ".2f", "lower"),
    ("201 (ready) but the first try through the proxy missed (servers)",
     lambda h: _get(h, "spawns", "ready_not_reachable"), ".0f", "lower"),
    ("never reachable within the timeout (servers)", lambda h: _get(h, "spawns", "unreachable"), ".0f", "lower"),
    ("storm: M requests sent within (s; goal ≤ 1)", lambda h: _get(h, "storm", "send_span_s"), ".2f", "—"),
    ("storm: all M answered (s)", lambda h: _get(h, "storm", "all_answered_s"), ".2f", "lower"),
    ("storm: accepted (201/202)", lambda h: _get(h, "storm", "accepted"), ".0f", "—"),
    ("storm: 429", lambda h: _get(h, "storm", "statuses", "429") or 0, ".0f", "—"),
    ("storm: 429 with Retry-After", lambda h: _get(h, "storm", "retry_after"), ".0f", "—"),
    ("storm: 5xx or no answer (lost)",
     lambda h: None if _get(h, "storm") is None else sum(
         v for k, v in h["storm"]["statuses"].items() if k == "0" or k.startswith("5")), ".0f", "lower"),
    ("storm: every accepted server ready (s)", lambda h: _get(h, "storm", "all_running_s"), ".2f", "lower"),
    ("prober GET /hub/api/users/<other>, idle p50 (ms)", lambda h: _pct(_get(h, "storm", "idle_ms"), 50), ".1f",
     "lower"),
    ("prober idle p99 (ms)", lambda h: _pct(_get(h, "storm", "idle_ms"), 99), ".1f", "lower"),
    ("prober during the storm p50 (ms)", lambda h: _pct(_get(h, "storm", "storm_ms"), 50), ".1f", "lower"),
    ("prober during the storm p99 (ms)", lambda h: _pct(_get(h, "storm", "storm_ms"), 99), ".1f", "lower"),
    ("**prober p99 storm / idle** (goal ≤ 2)",
     lambda h: _ratio(_pct(_get(h, "storm", "storm_ms"), 99), _pct(_get(h, "storm", "idle_ms"), 99)), ".1f", "lower"),
    ("prober answers during the storm (count)", lambda h: len(_get(h, "storm", "storm_ms") or []) or None, ".0f",
     "higher"),
    ("hub CPU during the N spawns, user servers excluded (s)",
     lambda h: _hub_cpu(_get(h, "spawns_cpu")), ".2f", "lower"),
    ("hub CPU during the storm, user servers excluded (s)", lambda h: _hub_cpu(_get(h, "storm_cpu")), ".2f", "lower"),
    ("other processes' CPU during the N spawns (cores)", lambda h: _get(h, "spawns_others_cores"), ".2f", "—"),
    ("other processes' CPU during the storm (cores)", lambda h: _get(h, "storm_others_cores"), ".2f", "—"),
]


def table(runs: list[Run], baseline: str | None = None) -> str:
    base = baseline is not None
    head = "| figure | JupyterHub |" + (f" fleethub baseline ({baseline}) |" if base else "") + \
        " fleethub | fleethub / JupyterHub |" + (" fleethub / baseline |" if base else "") + " better |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for label, get, fmt, better in FIGURES:
        jh, fb, fh = values(runs, "jh", get), values(runs, "fb", get), values(runs, "fh", get)

        def ratio(a: list[float], b: list[float], better: str = better) -> str:
            r = _ratio(statistics.median(a) if a else None, statistics.median(b) if b else None)
            return f"{r:.2f}" if r is not None and better != "—" else "—"

        cells = [label, summary(jh, fmt)] + ([summary(fb, fmt)] if base else []) + [summary(fh, fmt), ratio(fh, jh)]
        cells += [ratio(fh, fb)] if base else []
        lines.append("| " + " | ".join([*cells, better]) + " |")
    return "\n".join(lines)


def goals(runs: list[Run]) -> list[str]:
    def med(key: str, get: Getter) -> float | None:
        xs = values(runs, key, get)
        return statistics.median(xs) if xs else None

    out = []
    for key, label in HUBS:
        if not values(runs, key, lambda h: 1.0):
            continue
        reach = med(key, lambda h: _ratio(_get(h, "spawns", "all_reachable_s"), _get(h, "floor", "all_s")))
        p99 = med(key, lambda h: _ratio(_pct(_get(h, "storm", "storm_ms"), 99), _pct(_get(h, "storm", "idle_ms"), 99)))
        lost = values(runs, key, lambda h: None if _get(h, "storm") is None else sum(
            v for k, v in h["storm"]["statuses"].items() if k == "0" or k.startswith("5")))
        unsettled = values(runs, key, lambda h: None if _get(h, "storm") is None
                           else float(h["storm"]["all_running_s"] is None))
        no_retry = values(runs, key, lambda h: None if _get(h, "storm") is None else float(
            (h["storm"]["statuses"].get("429") or 0) - h["storm"]["retry_after"]))

        def verdict(ok: bool | None) -> str:
            return "—" if ok is None else ("PASS" if ok else "MISS")

        out.append(
            f"- {label}: 50 reachable ≤ 1.5× floor {verdict(None if reach is None else reach <= 1.5)}"
            f" (stretch ≤ 1.25 {verdict(None if reach is None else reach <= 1.25)}; median {reach or 0:.2f});"
            f" storm none lost {verdict(None if not lost else max(lost) == 0 and max(unsettled) == 0)}"
            f" (5xx/no answer, worst run: {max(lost) if lost else '—'}; runs where accepted servers did not all"
            f" become ready: {int(sum(unsettled)) if unsettled else '—'}); every 429 with Retry-After"
            f" {verdict(None if not no_retry else max(no_retry) == 0)};"
            f" prober p99 ≤ 2× idle {verdict(None if p99 is None else p99 <= 2)} (median {p99 or 0:.1f}×)")
    return out


def render(runs: list[Run], *, plan: dict[str, Any], machine: dict[str, str], notes: list[str]) -> str:
    head = [
        "# bench/spawn: spawn storms, fleethub against JupyterHub",
        "",
        f"Run {machine.get('date', '?')} on {machine.get('nproc', '?')} cores ({machine.get('cpu', '?')}),"
        f" fleethub {machine.get('fleethub', '?')}, JupyterHub {machine.get('jupyterhub', '?')},"
        f" configurable-http-proxy {machine.get('chp', '?')}. Command: `{plan['command']}`.",
        "",
        f"{len(runs)} runs; each run starts each hub fresh twice (once for the N={plan['spawns']} concurrent spawns,"
        f" once for the storm of M={plan['storm']}), one hub at a time, alternating which goes first. Cells: median"
        " over runs [min–max]. Every request goes through the hub's public port (CHP for JupyterHub, a fleethub"
        " proxy node), with an admin token the hub generated. The user server is tests/support/fake_singleuser.py"
        " for both hubs and for the floor. The ratio column is fleethub / JupyterHub of the medians: for a time,"
        " below 1 means fleethub is better.",
        "",
        "- *exec floor*: the N server commands exec'd at once by the benchmark itself, each polled every 10 ms"
        " until it answers 200; measured just before each hub's N spawns, with that hub idle.",
        "- *all reachable*: after its POST is answered, each server is asked `GET /user/<name>/api` through the"
        " proxy every 25 ms until the server itself answers (200 with its user name; a redirect or a hub page"
        " does not count). Timed from the moment the N POSTs were fired.",
        "- *storm*: M spawn POSTs fired at once while a prober asks `GET /hub/api/users/probe` every 20 ms on one"
        " keep-alive connection (idle: the 3 s before the storm; during: from the first POST until every"
        " accepted server is ready, counted with `GET /hub/api/users?state=ready` every second). The spawn limit is"
        f" {plan['limit_text']}.",
        "",
    ]
    body = [table(runs, machine.get("baseline")), "", "## Goals (never asserted; medians)", "", *goals(runs)]
    if notes:
        body += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(head + body) + "\n"
