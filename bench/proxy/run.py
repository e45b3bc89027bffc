"""fleethub's proxy against configurable-http-proxy 5.x (CHP), side by side in one run, same backend.

Starts a fast backend (bench/proxy/backend.py, two instances A and B), CHP (installed with npm
into a cache directory on first use), an embedded NATS server and fleethub proxy nodes
(`python -m fleethub run proxy`), then measures, alternating the order of the two proxies:

 1. wrk throughput and latency (1 KiB and 1 MiB bodies, 32 and 256 connections; 1 connection for
    the latency one hop adds) and the proxy's CPU time per request;
 2. websocket echo throughput (16 × 500) and round-trip time (1 × 2,000);
 3. the route API: sequential and concurrent route additions;
 4. route propagation to every node (3 fleethub nodes) with 10,000 routes, and how long a fresh
    node takes to serve them;
 5. memory with 0 and with 10,000 routes;
 6. a soak of websocket churn and requests to a dead target: RSS, fds and sockets before/after.

Prints a markdown table (direct | CHP | fleethub | fleethub/CHP). Needs node/npm and wrk.

    python bench/proxy/run.py [--quick] [--duration S] [--soak S] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from fleethub.shared.net import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from chp import ensure_chp, machine_info
from common import Plan, say, user_path
from loadgen import wrk_binary
from proctree import BenchError, until_sigterm
from routes import RouteFigures
from soak import SoakFigures
from table import NOTES, render
from traffic import TrafficFigures
from wire import WireError


class Bench(TrafficFigures, RouteFigures, SoakFigures):
    """One run: setup, then every figure family in turn (the figures live in their mixins' modules)."""

    async def run(self) -> None:
        plan = self.plan
        self.results["machine"] = machine_info(self.chp_version)
        for k, v in self.results["machine"].items():
            say(f"  {k}: {v}")
        say("\n== setup")
        self.backend_a = await self.start_backend("A")
        self.backend_b = await self.start_backend("B")
        self.dead_port = free_port()
        say(f"  backends A :{self.backend_a.port}, B :{self.backend_b.port}; dead target :{self.dead_port}")
        self.chp = await self.start_chp()
        say(f"  CHP {self.results['machine']['chp']} on :{self.chp.port} (API :{self.chp.api.port}), "  # type: ignore[union-attr]
            f"ready in {self.results['chp_start_s']:.2f} s")
        from fleethub.shared.embedded import EmbeddedNats

        self.nats = EmbeddedNats(self.workdir / "nats", port=None)
        (self.workdir / "nats").mkdir(exist_ok=True)
        self.nats.start()
        say(f"  nats-server on {self.nats.url}")
        self.fh = await self.attempt("start fleethub node (2 workers, route API)",
                                     self.start_fleethub(2, with_api=True))
        if self.fh is not None:
            self.fh.key = "fh"
            say(f"  fleethub node on :{self.fh.port} (API :{self.fh.api.port}), workers {self.fh.worker_pids()}, "  # type: ignore[union-attr]
                f"ready in {self.fh.ready_s:.2f} s")

        say("\n== memory, 0 routes")
        await asyncio.sleep(1.0)
        for px in self.order():
            self.memory_sample(px, "rss0")

        say(f"\n== route API: {plan.api_seq} sequential, {plan.api_conc} with {plan.api_clients} clients, "
            f"then up to {plan.routes} routes")
        for px in self.order():
            await self.attempt(f"route API [{px.label}]", self.route_api(px))
        for px in self.order():
            await self.attempt(f"bench routes [{px.label}]", self.bench_routes(px))

        say(f"\n== memory, {plan.routes} routes")
        await asyncio.sleep(2.0)
        for px in self.order():
            self.memory_sample(px, "rss_routes")

        say("\n== throughput (wrk)")
        if self.fh is not None:
            self.fh1 = await self.attempt("start fleethub node (1 worker)",
                                          self.start_fleethub(1, with_api=False, check_path=user_path(0) + "1k"))
            if self.fh1 is not None:
                self.fh1.key = "fh1"
        await self.throughput()

        say("\n== websocket echo")
        await self.websockets()

        say("\n== route propagation")
        await self.propagation()

        say(f"\n== soak ({plan.soak:.0f} s per proxy)")
        for px in self.order():
            res = await self.attempt(f"soak [{px.label}]", self.soak(px))
            if res is not None:
                self.put("soak", px.key, res)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, fewer routes (a smoke test, < 3 min)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of each wrk run (10; quick: 2)")
    parser.add_argument("--soak", type=float, default=None, help="seconds of soak per proxy (60; quick: 20)")
    parser.add_argument("--routes", type=int, default=None, help="routes loaded (10,000; quick: 2,000)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) afterwards")
    args = parser.parse_args()
    wrk_binary()
    plan = Plan.from_args(args)
    chp_version = ensure_chp()
    import uvloop

    workdir = Path(tempfile.mkdtemp(prefix="fleethub-bench-proxy-"))
    bench = Bench(plan, workdir, chp_version=chp_version)
    t0 = time.perf_counter()
    say(f"fleethub proxy vs configurable-http-proxy {chp_version} ({'quick' if plan.quick else 'full'} run; "
        f"logs in {workdir})")
    interrupted = False
    failed: BaseException | None = None

    try:
        uvloop.run(until_sigterm(bench.run, bench.cleanup))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        say("\ninterrupted: stopping every process")
    except (BenchError, OSError, WireError, TimeoutError) as exc:
        failed = exc
    finally:
        bench.cleanup()
    elapsed = time.perf_counter() - t0
    if failed is not None:
        say(f"\nbenchmark failed: {type(failed).__name__}: {failed}")
        say(f"logs kept in {workdir}")
        return 2
    if interrupted:
        say(f"logs kept in {workdir}")
        return 130
    say(f"\n## fleethub proxy vs configurable-http-proxy {chp_version}\n")
    m = bench.results["machine"]
    say(f"{m['nproc']} × {m['cpu']}, Linux {m['kernel']}; Python {m['python']} (uvloop {m['uvloop']}), "
        f"node {m['node']}, {m['wrk']}, nats-server {m['nats-server']}; fleethub {m['fleethub']}. "
        f"fleethub: 2 workers per node unless stated. Run took {elapsed:.0f} s"
        f"{' (--quick)' if plan.quick else ''}; wrk {plan.duration:.0f} s per figure.\n")
    say(render(bench.results, bench.plan))
    say(NOTES)
    if bench.errors:
        say("\nfailed measurements (– in the table):")
        for e in bench.errors:
            say(f"- {e}")
    if args.json is not None:
        bench.results["errors"] = bench.errors
        bench.results["elapsed_s"] = elapsed
        args.json.write_text(json.dumps(bench.results, indent=2, default=str))
        say(f"\nfigures written to {args.json}")
    if bench.errors or args.keep:
        say(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bench.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
