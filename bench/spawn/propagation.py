"""Route propagation during a spawn storm: from the route's put in the bucket to every proxy node serving it.

Starts `fleethub up` (embedded NATS and PostgreSQL, a temporary data dir, the test suite's stand-in user
server, `proxy.workers` nodes sharing the port), sends N concurrent `POST /users/<name>/server`, and
listens on the bus meanwhile (as the spawner identity, with the seed `fleethub up` wrote): the route
bucket's watch gives each put's revision and the time NATS stored it; the nodes' acknowledgements
(`<ns>.proxy.applied`, sent by a node as soon as its served table holds a revision) give when each node
serves it. Prints p50/p99/max of put → node serving over every (route, node) pair, the slowest node's
figure per route, and what the API answered; every server is then probed through the proxy at once.

    python bench/spawn/propagation.py [--spawns 50] [--nodes 2] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from fleethub.shared.bus import Bus, Credentials, RoutesApplied
from fleethub.shared.bus.natsconfig import seed_file
from fleethub.shared.events import Route
from fleethub.shared.names import route_key
from fleethub.shared.net import free_port

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "support" / "fake_singleuser.py"


class Listener:
    """Puts of user routes (revision → when stored) and nodes' acknowledgements (node → [(revision, when)])."""

    def __init__(self) -> None:
        self.puts: dict[int, float] = {}
        self.deletes: list[str] = []  # user routes deleted (while spawning: someone removed a route too early)
        self.acks: dict[str, list[tuple[int, float]]] = {}
        self._last: tuple[str, bool, float] | None = None

    def apply(self, key: str, route: Route | None, written: float) -> None:
        self._last = (key, route is not None, written)
        if route is None and key.startswith("user."):
            self.deletes.append(key)

    def revision(self, revision: int) -> None:
        if self._last is not None and self._last[0].startswith("user.") and self._last[1]:
            self.puts[revision] = self._last[2]
        self._last = None

    def heard(self, ack: RoutesApplied) -> None:
        if ack.serving:
            # the node's own clock (same machine): when its table reached the revision, not when we heard
            self.acks.setdefault(ack.node, []).append((ack.revision, ack.at or time.time()))

    def latencies(self) -> tuple[list[float], list[float], list[str]]:
        """Per (route, node) pair, and per route its slowest node; routes some node never acknowledged."""
        pairs, worst, missing = [], [], []
        for revision, stored in sorted(self.puts.items()):
            per_node = []
            for acks in self.acks.values():
                served = next((t for r, t in acks if r >= revision), None)
                if served is None:
                    missing.append(str(revision))
                    break
                per_node.append(max(0.0, served - stored))
            else:
                pairs.extend(per_node)
                worst.append(max(per_node))
        return pairs, worst, missing


def pct(xs: list[float], q: int) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


def client(base: str, token: str, n: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"token {token}"}, timeout=120,
                             limits=httpx.Limits(max_connections=2 * n + 4))


async def storm(base: str, token: str, names: list[str]) -> tuple[dict[int, int], dict[str, list[int]]]:
    """N concurrent spawns; each server the API calls ready (201) is probed through the proxy at once."""
    answers: dict[int, int] = {}
    probes: dict[str, list[int]] = {}
    async with client(base, token, len(names)) as api:
        r = await api.post("/hub/api/users", json={"usernames": names})
        assert r.status_code in (201, 409), r.text

        async def one(name: str) -> None:
            r = await api.post(f"/hub/api/users/{name}/server")
            answers[r.status_code] = answers.get(r.status_code, 0) + 1
            if r.status_code == 201:  # ready: it must answer through the proxy now, not redirect
                probe = await api.get(f"/user/{name}/api", follow_redirects=False)
                probes.setdefault(name, []).append(probe.status_code)

        await asyncio.gather(*(one(n) for n in names))
    return answers, probes


async def stop_all(base: str, token: str, names: list[str]) -> None:
    async with client(base, token, len(names)) as api:
        await asyncio.gather(*(api.delete(f"/hub/api/users/{n}/server") for n in names))


async def measure(data_dir: Path, base: str, token: str, spawns: int, run: int) -> dict[str, Any]:
    runtime = json.loads((data_dir / "runtime.json").read_text())
    creds = Credentials(identity="spawner", nkey_file=seed_file(data_dir / "nats-keys", "spawner"))
    bus = Bus(runtime["nats_url"], "fh", "bench-propagation", creds)
    await bus.connect()
    listener = Listener()
    loaded = asyncio.Event()
    watch = asyncio.create_task(bus.routes.follow(listener.apply, loaded.set, listener.revision))
    sub = await bus.follow_applied(listener.heard)
    try:
        await asyncio.wait_for(loaded.wait(), 30)
        listener.puts.clear()  # what was there before the storm
        await asyncio.sleep(1.0)  # every node heard at least once
        names = [f"prop{run}x{i}" for i in range(spawns)]
        t0 = time.perf_counter()
        answers, probes = await storm(base, token, names)
        took = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # late acknowledgements
        mine = {route_key(n) for n in names}  # a previous run's stops may still be deleting its routes
        deleted = sum(1 for key in listener.deletes if key in mine)
        await stop_all(base, token, names)
    finally:
        await sub.unsubscribe()
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await bus.close()
    pairs, worst, missing = listener.latencies()
    redirected = sorted(n for n, codes in probes.items() if codes != [200])
    return {"nodes": len(listener.acks), "routes": len(listener.puts), "pairs": pairs, "worst": worst,
            "missing": missing, "answers": answers, "redirected": redirected, "storm_s": took, "deleted": deleted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spawns", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=2, help="proxy worker processes (each one a node)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="fleethub-bench-prop-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETHUB_")}
    env.update(FLEETHUB_PROXY__PORT=str(port), FLEETHUB_PROXY__WORKERS=str(args.nodes),
               FLEETHUB_SPAWNER__CMD=json.dumps([sys.executable, str(FAKE)]),
               FLEETHUB_API__SLOW_SPAWN_TIMEOUT="60")
    up = subprocess.Popen([sys.executable, "-m", "fleethub", "up", "--data-dir", str(data_dir)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    results = []
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "is running" in line:
                break
        token = subprocess.run([sys.executable, "-m", "fleethub", "token", "admin", "--data-dir", str(data_dir)],
                               env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        for run in range(args.runs):
            results.append(asyncio.run(measure(data_dir, base, token, args.spawns, run)))
    finally:
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"{'run':>4}{'nodes':>7}{'routes':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p99 slowest node':>18}"
          f"{'storm s':>9}  API answers / ready but redirected / routes deleted while spawning")
    for i, r in enumerate(results):
        ms = [x * 1000 for x in r["pairs"]]
        worst = [x * 1000 for x in r["worst"]]
        print(f"{i:>4}{r['nodes']:>7}{r['routes']:>8}{pct(ms, 50):9.1f}{pct(ms, 99):9.1f}{max(ms, default=0):9.1f}"
              f"{pct(worst, 99):18.1f}{r['storm_s']:9.2f}  {r['answers']} / {len(r['redirected'])} / {r['deleted']}"
              + (f"; never acknowledged: {r['missing']}" if r["missing"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
