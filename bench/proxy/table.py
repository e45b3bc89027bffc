"""The report: one row per figure (direct | CHP | fleethub | fleethub/CHP) rendered as a markdown table, and
the notes printed under it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import MIB, Plan
from figures import fmt


@dataclass
class Row:
    """One figure of the table."""

    figure: str
    better: str  # "higher" | "lower" | ""
    direct: Any = None
    chp: Any = None
    fh: Any = None
    note: str = ""


def ratio(row: Row) -> str:
    """fleethub / CHP, "–" unless both are numbers."""
    if isinstance(row.chp, (int, float)) and isinstance(row.fh, (int, float)) and row.chp > 0 and row.fh >= 0:
        return f"{row.fh / row.chp:.2f}"
    return "–"


def build_rows(results: dict[str, Any], plan: Plan) -> list[Row]:
    """The table's rows from the figures a run collected (None where a measurement failed)."""
    r = results
    rows: list[Row] = []
    wrk = r.get("wrk", {})

    def w(size: str, c: int, key: str, field_: str) -> Any:
        x = wrk.get(f"{size}.c{c}.{key}")
        return None if x is None else x.get(field_)

    for size, label in (("1k", "1 KiB"), ("1m", "1 MiB")):
        for c in (32, 256):
            rows.append(Row(f"wrk {label} c{c}: requests/s", "higher", w(size, c, "direct", "rps"),
                            w(size, c, "chp", "rps"), w(size, c, "fh", "rps")))
            rows.append(Row(f"wrk {label} c{c}: requests/s, fleethub 1 worker", "higher",
                            w(size, c, "direct", "rps"), w(size, c, "chp", "rps"), w(size, c, "fh1", "rps")))
            rows.append(Row(f"wrk {label} c{c}: p50 ms", "lower", w(size, c, "direct", "p50_ms"),
                            w(size, c, "chp", "p50_ms"), w(size, c, "fh", "p50_ms")))
            rows.append(Row(f"wrk {label} c{c}: p99 ms", "lower", w(size, c, "direct", "p99_ms"),
                            w(size, c, "chp", "p99_ms"), w(size, c, "fh", "p99_ms")))
            rows.append(Row(f"wrk {label} c{c}: proxy CPU µs/request (direct: backend)", "lower",
                            w(size, c, "direct", "cpu_us_per_req"), w(size, c, "chp", "cpu_us_per_req"),
                            w(size, c, "fh", "cpu_us_per_req")))
    d50, d99 = w("1k", 1, "direct", "p50_ms"), w("1k", 1, "direct", "p99_ms")

    def added(v: Any, base: Any) -> Any:
        return v - base if isinstance(v, (int, float)) and isinstance(base, (int, float)) else None

    rows.append(Row("wrk 1 KiB c1: p50 ms", "lower", d50, w("1k", 1, "chp", "p50_ms"), w("1k", 1, "fh", "p50_ms")))
    rows.append(Row("wrk 1 KiB c1: p99 ms", "lower", d99, w("1k", 1, "chp", "p99_ms"), w("1k", 1, "fh", "p99_ms")))
    rows.append(Row("added latency c1 p50 ms (proxy − direct)", "lower", None,
                    added(w("1k", 1, "chp", "p50_ms"), d50), added(w("1k", 1, "fh", "p50_ms"), d50)))
    rows.append(Row("added latency c1 p99 ms (proxy − direct)", "lower", None,
                    added(w("1k", 1, "chp", "p99_ms"), d99), added(w("1k", 1, "fh", "p99_ms"), d99)))
    rows.append(Row("wrk 1 KiB c1: requests/s, fleethub 1 worker", "higher", w("1k", 1, "direct", "rps"),
                    w("1k", 1, "chp", "rps"), w("1k", 1, "fh1", "rps")))

    ws = r.get("ws", {})

    def wsv(key: str, f: str) -> Any:
        return ws.get(key, {}).get(f)

    p = plan
    rows.append(Row(f"websocket echo {p.ws_conns}×{p.ws_msgs}: messages/s", "higher", wsv("direct", "msgs_per_s"),
                    wsv("chp", "msgs_per_s"), wsv("fh", "msgs_per_s")))
    rows.append(Row(f"websocket echo 1×{p.ws_rtt}: RTT p50 µs", "lower", wsv("direct", "rtt_p50_us"),
                    wsv("chp", "rtt_p50_us"), wsv("fh", "rtt_p50_us")))
    rows.append(Row(f"websocket echo 1×{p.ws_rtt}: RTT p99 µs", "lower", wsv("direct", "rtt_p99_us"),
                    wsv("chp", "rtt_p99_us"), wsv("fh", "rtt_p99_us")))

    api = r.get("route_api", {})

    def av(key: str, f: str) -> Any:
        return api.get(key, {}).get(f)

    rows.append(Row(f"route API: {p.api_seq} sequential adds, routes/s", "higher", None,
                    av("chp", "seq_routes_per_s"), av("fh", "seq_routes_per_s")))
    rows.append(Row("route API: per-add p50 ms", "lower", None, av("chp", "seq_p50_ms"), av("fh", "seq_p50_ms")))
    rows.append(Row("route API: per-add p99 ms", "lower", None, av("chp", "seq_p99_ms"), av("fh", "seq_p99_ms")))
    rows.append(Row(f"route API: {p.api_clients} concurrent clients, routes/s", "higher", None,
                    av("chp", "conc_routes_per_s"), av("fh", "conc_routes_per_s")))

    prop = r.get("propagation", {})

    def pv(key: str, f: str) -> Any:
        return prop.get(key, {}).get(f) if isinstance(prop.get(key), dict) else None

    nodes = pv("fh", "nodes")
    where = f"CHP 1 node, fleethub {nodes} nodes" if nodes else "all nodes"
    for f, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        rows.append(Row(f"route change → served by every node ({where}), {p.routes} routes: {name} ms", "lower",
                        None, pv("chp", f), pv("fh", f)))
    rows.append(Row(f"fresh node: exec → serving {p.routes} routes, s", "lower", None, "N/A (starts empty)",
                    prop.get("fh.fresh_node_s")))

    mem = r.get("memory", {})

    def mv(key: str, which: str) -> Any:
        return mem.get(f"{key}.{which}")

    def mib(x: Any) -> Any:
        return None if x is None else x["node"] / MIB

    def per10k(key: str, per_worker: bool) -> Any:
        a, z = mv(key, "rss0"), mv(key, "rss_routes")
        if a is None or z is None or not p.routes:
            return None
        if per_worker:
            if len(a["workers"]) != len(z["workers"]) or not a["workers"]:
                return None
            grow = sum(zz - aa for aa, zz in zip(a["workers"], z["workers"], strict=True)) / len(a["workers"])
        else:
            grow = z["node"] - a["node"]
        return grow / MIB * 10_000 / p.routes

    rows.append(Row("RSS, 0 routes, MiB (node: every process)", "lower", None, mib(mv("chp", "rss0")),
                    mib(mv("fh", "rss0"))))
    rows.append(Row(f"RSS, {p.routes} routes, MiB (node)", "lower", None, mib(mv("chp", "rss_routes")),
                    mib(mv("fh", "rss_routes"))))
    rows.append(Row("RSS growth per 10,000 routes, MiB (node)", "lower", None, per10k("chp", False),
                    per10k("fh", False)))
    rows.append(Row("RSS growth per 10,000 routes, MiB (per worker)", "lower", None, per10k("chp", True),
                    per10k("fh", True)))

    soak = r.get("soak", {})

    def sv(key: str, f: str) -> Any:
        return soak.get(key, {}).get(f)

    rows.append(Row(f"soak {p.soak:.0f} s: RSS growth %", "lower", None, sv("chp", "rss_growth_pct"),
                    sv("fh", "rss_growth_pct")))
    rows.append(Row(f"soak: open fds after {p.idle:.0f} s idle − before", "lower", None, sv("chp", "fd_delta"),
                    sv("fh", "fd_delta")))
    rows.append(Row(f"soak: open sockets after {p.idle:.0f} s idle − before", "lower", None, sv("chp", "socket_delta"),
                    sv("fh", "socket_delta")))
    rows.append(Row("soak: ESTABLISHED sockets to the dead target (end / max)", "lower", None,
                    _pair(sv("chp", "established_to_dead_end"), sv("chp", "established_to_dead_max")),
                    _pair(sv("fh", "established_to_dead_end"), sv("fh", "established_to_dead_max"))))

    def left_open(key: str) -> Any:
        c = soak.get(key, {}).get("counters")
        return None if c is None else c.get("ws_left_open_after_backend_died", 0)

    rows.append(Row("soak: websockets left open by the proxy after the backend dropped them", "lower", None,
                    left_open("chp"), left_open("fh")))
    return rows


def _pair(a: Any, b: Any) -> Any:
    return None if a is None else f"{a} / {b}"


NOTES = """
- direct: wrk/websocket client straight to the backend (a single-process uvloop server) — the ceiling.
- CPU µs/request: utime + stime of every process of the proxy (CHP: node; fleethub: supervisor and
  workers) during the wrk run, divided by the requests served; direct column: the backend's.
- Client, backend and proxies share the same cores, so a proxy's figures include contention with them.
- Route change → served: from just before the API POST (to CHP, or to fleethub node 1) until one
  kept-alive connection to every serving process of every node answers from the new backend.
- RSS sums every process of a node (fleethub: the supervisor and its workers, each its own
  interpreter; pages of shared libraries count in each — PSS is in the JSON); per-worker growth
  is the mean over the serving processes.
- Soak: websocket churn (half closed by the client, half dropped by the backend), upgrades and GETs
  to a route whose target has nothing listening, and upgrades answered with a plain 503. Sockets
  after idle include each process's pooled keep-alive connection to the backend (JSON: to_backend_end)."""


def render(results: dict[str, Any], plan: Plan) -> str:
    """The markdown table, then a line for each wrk run that saw errors."""
    rows = build_rows(results, plan)
    out = ["| figure | better | direct | CHP | fleethub | fleethub/CHP |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        cells = (row.figure, row.better, fmt(row.direct), fmt(row.chp), fmt(row.fh), ratio(row))
        out.append("| " + " | ".join(cells) + " |")
    names = {"direct": "direct", "chp": "CHP", "fh": "fleethub", "fh1": "fleethub 1 worker"}
    for key, x in results.get("wrk", {}).items():
        if x.get("errors") or x.get("non2xx"):
            size, conns, who = key.split(".", 2)
            out.append(f"\nwrk {size} {conns} against {names.get(who, who)}: {x['errors']} socket errors "
                       f"(connect/read/write/timeout), {x['non2xx']} non-2xx answers.")
    return "\n".join(out)
