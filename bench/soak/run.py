"""The soak: spawn/stop churn for `--minutes` against a whole fleethub (2 api, 2 spawner workers, 2 proxy nodes,
auth, culler; embedded NATS and PostgreSQL), a SIGKILL of a random service process every `--kill-every`
seconds (the bench's supervisor restarts it as `fleethub up` would), an oracle every 10 s comparing the
database, the user-server processes, the routes bucket and every proxy node's table, and RSS, open fds and
JetStream consumer counts sampled every 10 s. Writes a markdown report (`--out`, default
bench/soak/results.md) and the raw figures as JSON beside it.

Not a test: nothing is asserted; the report says PASS/MISS against the plan's criteria (no persistent oracle
finding; RSS and fds of each service growing < 10 % after warm-up; consumer counts stable).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from churn import Churn
from invariants import ProxyNode, RouteMirror, SoakOracle
from report import write_report
from sampler import Sampler
from stack import Stack, describe, mint_token
from tracker import Tracker

from fleethub.shared.bus.topology import Names
from fleethub.shared.db.engine import make_engine


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the churn (default 30)")
    p.add_argument("--users", type=int, default=20, help="users churning at once (default 20)")
    p.add_argument("--kill-every", default="30,90", help="seconds between kills, MIN,MAX (default 30,90; 0: none)")
    p.add_argument("--warmup", type=float, default=180.0, help="seconds before RSS/fd baselines (default 180)")
    p.add_argument("--check-every", type=float, default=10.0, help="seconds between oracle checks (default 10)")
    p.add_argument("--hold", default="10,60", help="seconds a server is held before its stop, MIN,MAX")
    p.add_argument("--busy-share", type=float, default=0.5, help="share of holds with a websocket open")
    p.add_argument("--culler-timeout", type=float, default=30.0, help="culler.timeout (default 30 s)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.md")
    p.add_argument("--workdir", type=Path, default=None, help="default: a new temporary directory")
    p.add_argument("--note", default="", help="what else ran on the machine meanwhile (a sentence for the report)")
    p.add_argument("--report-from", type=Path, default=None,
                   help="only write the report again, from the soak.pickle a run left in its work dir")
    return p.parse_args()


def pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    return float(lo), float(hi or lo)


class Soak:
    """One run: the stack, the churn, the killer, the oracle and the sampler, and their timeline."""

    def __init__(self, args: argparse.Namespace, stack: Stack, token: str) -> None:
        self.args = args
        self.stack = stack
        self.token = token
        self.t0 = time.monotonic()
        self.tracker = Tracker()
        self.sampler = Sampler()
        self.killed_pids: set[int] = set()
        self.timeline = open(stack.workdir / "timeline.log", "a")
        bases = [f"http://127.0.0.1:{p}" for p in stack.proxy_ports]
        users = [f"soak-{i:03d}" for i in range(args.users)]
        self.churn = Churn(bases, token, users, hold=pair(args.hold), busy_share=args.busy_share, t0=self.t0)
        self.final: dict[str, Any] = {}

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def say(self, text: str) -> None:
        line = f"[{self.now():7.1f}s] {text}"
        print(line, flush=True)
        self.timeline.write(line + "\n")
        self.timeline.flush()

    async def killer(self, stop: asyncio.Event) -> None:
        lo, hi = pair(self.args.kill_every)
        if hi <= 0:
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), random.uniform(lo, hi))
                return
            except TimeoutError:
                pass
            live = [s for s in self.stack.slots if s.pid is not None and time.monotonic() - s.started > 5]
            if not live:
                continue
            slot = random.choice(live)
            pid = slot.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            self.killed_pids.add(pid)
            self.tracker.kill(self.now(), slot.name, pid)
            self.say(f"KILL -9 {slot.name} (pid {pid})")

    async def observe(self, stop: asyncio.Event, oracle: SoakOracle) -> None:
        while not stop.is_set():
            await self.observe_once(oracle)
            try:
                await asyncio.wait_for(stop.wait(), self.args.check_every)
            except TimeoutError:
                pass

    async def observe_once(self, oracle: SoakOracle) -> list[Any]:
        t = self.now()
        self.sampler.sample_processes(t, [(s.name, s.pid, s.started - self.t0) for s in self.stack.slots
                                          if s.pid is not None])
        consumers = await self.sampler.sample_consumers(t)
        try:
            findings = await oracle.check(settled=False)
        except Exception as exc:  # a source away (PostgreSQL busy): note it, try again at the next tick
            self.say(f"oracle could not read: {type(exc).__name__}: {exc}")
            return []
        snap = oracle.last
        assert snap is not None
        statuses = [s["status"] for s in snap.states.values()]
        counts: dict[str, Any] = {"running": statuses.count("running"), "pending": statuses.count("pending"),
                                  "stopping": statuses.count("stopping"), "processes": len(snap.processes),
                                  "routes": len(snap.routes)}
        counts["consumers"] = consumers
        newly = self.tracker.check(t, findings, counts)
        shown = "; ".join(str(f)[:200] for f in findings[:4]) + (" …" if len(findings) > 4 else "")
        self.say(f"oracle: {len(findings)} findings{': ' + shown if findings else ''} | running {counts['running']} "
                 f"pending {counts['pending']} procs {counts['processes']} routes {counts['routes']} "
                 f"| consumers {consumers}")
        for ep in newly:
            self.say(f"PERSISTENT: {ep.key} ({ep.detail}) since {ep.first:.0f}s")
        return findings

    async def run(self) -> None:
        args = self.args
        ns = self.stack.settings.nats_namespace if self.stack.settings else "soak"
        mirror = RouteMirror(self.stack.nats.url, Names(ns).routes_bucket)
        await mirror.start()
        await self.sampler.connect(self.stack.nats.url)
        assert self.stack.settings is not None
        engine = make_engine(self.stack.settings.require_database_url(), pool_size=2)
        nodes = [ProxyNode(f"proxy-{i}", port, api)
                 for i, (port, api) in enumerate(zip(self.stack.proxy_ports, self.stack.proxy_api_ports, strict=True))]
        # reach=False: the harness's reachability probe is traffic, and traffic every 10 s would keep every
        # server from being culled; the churn checks reachability itself after each spawn
        oracle = SoakOracle(mirror, self.stack.settings, engine, nodes, reach=False)
        stop = asyncio.Event()
        await self.churn.create_users()
        supervise = asyncio.create_task(self.stack.supervise(self.on_supervisor))
        tasks = [asyncio.create_task(self.churn.run()), asyncio.create_task(self.killer(stop)),
                 asyncio.create_task(self.observe(stop, oracle))]
        self.say(f"soak started: {args.users} users for {args.minutes} min, kills every {args.kill_every} s")
        try:
            await asyncio.sleep(args.minutes * 60)
        finally:
            stop.set()
            self.churn.stopping.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.final["churn_end"] = self.now()
        self.say("churn stopped; stopping every server and letting the hub settle")
        await self.settle(oracle)
        self.stack.stopping = True
        supervise.cancel()
        await self.churn.close()
        await oracle.close()
        await engine.dispose()
        await mirror.stop()
        await self.sampler.close()
        self.timeline.close()

    async def settle(self, oracle: SoakOracle) -> None:
        """After the churn: stop every server, then one quiet oracle check (all four sources must agree and be
        empty of user servers)."""
        for user in self.churn.users:
            await self.churn.request("DELETE", "/hub/api/users/{u}/server", f"/hub/api/users/{user}/server")
        deadline = time.monotonic() + 90
        findings: list[Any] = []
        while time.monotonic() < deadline:
            await asyncio.sleep(5)
            findings = await self.observe_once(oracle)
            last = self.tracker.checks[-1][2] if self.tracker.checks else {}
            if not findings and last.get("running") == 0 and last.get("processes") == 0 and last.get("routes") == 0:
                break
        self.final["settled_after"] = self.now() - self.final["churn_end"]
        self.final["final_findings"] = [str(f) for f in findings]
        self.final["final_counts"] = self.tracker.checks[-1][2] if self.tracker.checks else {}
        self.final["loadavg"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])

    def on_supervisor(self, event: str) -> None:
        self.say(f"supervisor: {event}")


def wait_hub(bases: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    for base in bases:
        for path in ("/hub/api/", "/hub/login"):
            while True:
                try:
                    if httpx.get(base + path, timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{base}{path} did not answer 200 within {timeout:.0f}s")
                time.sleep(0.5)


class Recorded:
    """What the report reads of a `Soak`, without its live connections (pickled at the end of a run)."""

    def __init__(self, soak: Soak) -> None:
        self.tracker, self.sampler_series, self.consumers = soak.tracker, soak.sampler.series, soak.sampler.consumers
        self.stats, self.users, self.final = soak.churn.stats, soak.churn.users, soak.final
        self.killed_pids, self.t0 = soak.killed_pids, soak.t0
        self.slots = [(s.name, s.exits) for s in soak.stack.slots]
        self.layout = describe(soak.stack)


def save_and_report(args: argparse.Namespace, rec: Recorded, *, started: str, workdir: Path) -> None:
    with open(workdir / "soak.pickle", "wb") as f:
        pickle.dump({"rec": rec, "args": args, "started": started}, f)
    print(write_report(args, rec, started=started, workdir=workdir))


def main() -> int:
    args = parse_args()
    if args.report_from is not None:
        saved = pickle.loads(args.report_from.read_bytes())
        saved["args"].out = args.out
        saved["args"].note = args.note or getattr(saved["args"], "note", "")
        print(write_report(saved["args"], saved["rec"], started=saved["started"], workdir=args.report_from.parent))
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fleethub-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir, culler_timeout=args.culler_timeout, run_id=uuid.uuid4().hex[:12])
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"soak workdir: {workdir}", flush=True)
    soak = None
    try:
        settings = stack.start()
        wait_hub([f"http://127.0.0.1:{p}" for p in stack.proxy_ports])
        token = mint_token(settings, "admin")
        soak = Soak(args, stack, token)
        asyncio.run(soak.run())
    finally:
        stack.stop()
    if soak is not None:
        save_and_report(args, Recorded(soak), started=started, workdir=workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
