"""The footprint of `fleethub up` against JupyterHub 6.1 + configurable-http-proxy, side by side in one run.

Per round, each hub is started fresh (one after the other, so neither start competes with the other) and
timed to ready: the first 200 of both `/hub/api/` and `/hub/login` on its public URL (CHP's port for
JupyterHub, the proxy node's for fleethub). Then both idle together: after `--settle` seconds their whole
process trees are sampled (RSS and PSS summed: for fleethub `fleethub up` and all it started, NATS and
PostgreSQL included; for JupyterHub the hub and CHP), and their CPU is read from /proc (utime + stime,
children's included) over `--idle` seconds. The machine's load average is recorded with each figure: it is
shared, so a start time measured under load is understated for both.

    python bench/footprint/run.py [--rounds 3] [--settle 30] [--idle 60] [--out bench/footprint/results.md]
        [--fleethub-args "--processes"] [--before /tmp/before-checkout]

Goals (issue 18; reported, never asserted): fleethub ready no later than JupyterHub; idle RSS ≤ 1.5×
JupyterHub + CHP; idle CPU < 1 % of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (str(ROOT / "bench" / "proxy"), str(ROOT / "bench" / "api"), str(ROOT)):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)

import hubs  # bench/api/hubs.py: JupyterHub's venv and configs of both hubs
from hubs import say
from proctree import CLK_TCK, BenchError, Proc, pss_bytes, rss_bytes
from wire import WireError

from fleethub.shared.net import free_port

READY_PATHS = ("/hub/api/", "/hub/login")
START_TIMEOUT = 120.0
MB = 2**20


@dataclass
class Figures:
    """One hub in one round."""

    ready_s: float = 0.0
    ready_load: float = 0.0
    rss: int = 0
    pss: int = 0
    procs: int = 0
    idle_load: float = 0.0
    cpu_share: float = 0.0  # of one core, over the idle window
    by_part: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # part → (rss, pss, cpu share)


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def part_of(cmd: str) -> str:
    for needle, part in ((" run api", "api"), (" run auth", "auth"), (" run spawner", "spawner"),
                         (" run proxy", "proxy"), (" run culler", "culler"), ("nats-server", "nats"),
                         ("postgres", "postgres"), ("configurable-http-proxy", "chp"), ("jupyterhub", "jupyterhub"),
                         (" up ", "fleethub up")):
        if needle in cmd:
            return part
    return "other"


def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime: a process's own CPU and that of its reaped children."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    f = raw[raw.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def wait_ready(proc: Proc, port: int) -> float:
    """Seconds from the start of `proc` to the first 200 of every READY_PATHS on `port`."""
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(READY_PATHS)
    while time.monotonic() < deadline:
        proc.check()
        for path in list(pending):
            try:
                if (await hubs.request(port, "GET", path, timeout=2)).status == 200:
                    pending.remove(path)
            except (OSError, WireError, TimeoutError):
                pass
        if not pending:
            return time.perf_counter() - proc.started
        await asyncio.sleep(0.02)
    raise proc.failure(f"did not answer {pending} on port {port} within {START_TIMEOUT:.0f} s")


def start_jupyterhub(workdir: Path, chp: str) -> tuple[Proc, int]:
    workdir.mkdir(parents=True)
    proxy_port = free_port()
    config = workdir / "jupyterhub_config.py"
    config.write_text(hubs.jupyterhub_config(workdir, hub_port=free_port(), proxy_port=proxy_port,
                                             chp_api_port=free_port(), chp=chp, service_token=secrets.token_hex(32),
                                             admin_token=secrets.token_hex(32)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "CONFIGPROXY_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{hubs.JH_VENV / 'bin'}:{env.get('PATH', '')}"
    proc = Proc("jupyterhub", [str(hubs.JH_VENV / "bin" / "jupyterhub"), "-f", str(config)],
                workdir / "jupyterhub.log", env=env, cwd=workdir).start()
    return proc, proxy_port


def start_fleethub(workdir: Path, extra_args: list[str], checkout: Path = ROOT) -> tuple[Proc, int]:
    """`fleethub up` of `checkout` (run from there with this interpreter: its `fleethub` package comes first)."""
    workdir.mkdir(parents=True)
    proxy_port = free_port()
    config = workdir / "fleethub.toml"
    config.write_text(hubs.fleethub_config(proxy_port=proxy_port, api_port=free_port(),
                                           service_token=secrets.token_hex(32), with_roles=True))
    proc = Proc("fleethub-up", [sys.executable, "-m", "fleethub", "up", "--config", str(config), "--data-dir",
                                str(workdir / "data"), *extra_args], workdir / "fleethub-up.log",
                env=hubs.fleethub_env(), cwd=checkout).start()
    return proc, proxy_port


def memory(proc: Proc, fig: Figures) -> None:
    fig.idle_load = load1()
    for pid in proc.tree():
        part = part_of(command(pid))
        rss, pss = rss_bytes(pid), pss_bytes(pid)
        fig.rss += rss
        fig.pss += pss
        fig.procs += 1
        old = fig.by_part.get(part, (0, 0, 0.0))
        fig.by_part[part] = (old[0] + rss, old[1] + pss, old[2])


def cpu_snapshot(proc: Proc) -> dict[int, tuple[str, int]]:
    return {pid: (part_of(command(pid)), cpu_ticks(pid)) for pid in proc.tree()}


def cpu_used(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], seconds: float,
             fig: Figures) -> None:
    total = 0
    for pid, (part, ticks) in after.items():
        used = ticks - before.get(pid, (part, 0))[1] if pid in before else 0  # a process born since: not idle
        total += used
        old = fig.by_part.get(part, (0, 0, 0.0))
        fig.by_part[part] = (old[0], old[1], old[2] + used / CLK_TCK / seconds)
    fig.cpu_share = total / CLK_TCK / seconds


def start(key: str, n: int, args: argparse.Namespace, chp: str, base: Path) -> tuple[Proc, int]:
    if key == "jh":
        return start_jupyterhub(base / f"jh{n}", chp)
    if key == "before":
        return start_fleethub(base / f"before{n}", shlex.split(args.before_args), Path(args.before))
    return start_fleethub(base / f"fh{n}", shlex.split(args.fleethub_args))


async def one_round(n: int, args: argparse.Namespace, chp: str, base: Path) -> dict[str, Figures]:
    keys = ["jh", "fh", *(["before"] if args.before else [])]
    figs = {key: Figures() for key in keys}
    procs: list[Proc] = []
    started: dict[str, Proc] = {}
    try:
        # one at a time (the next start would compete for the same cores), in an order turning each round
        for key in keys[n % len(keys):] + keys[:n % len(keys)]:
            fig = figs[key]
            fig.ready_load = load1()
            proc, port = start(key, n, args, chp, base)
            procs.append(proc)
            started[key] = proc
            fig.ready_s = await wait_ready(proc, port)
            say(f"  round {n + 1}: {key} ready in {fig.ready_s:.2f} s (load {fig.ready_load:.2f})")
        await asyncio.sleep(args.settle)
        for key in keys:
            memory(started[key], figs[key])
        before = {key: cpu_snapshot(started[key]) for key in keys}
        t0 = time.perf_counter()
        await asyncio.sleep(args.idle)
        seconds = time.perf_counter() - t0
        for key in keys:
            fig = figs[key]
            cpu_used(before[key], cpu_snapshot(started[key]), seconds, fig)
            fig.idle_load = (fig.idle_load + load1()) / 2
            say(f"  round {n + 1}: {key} idle RSS {fig.rss / MB:.0f} MB, PSS {fig.pss / MB:.0f} MB, "
                f"{fig.procs} processes, CPU {100 * fig.cpu_share:.2f} % of a core (load {fig.idle_load:.2f})")
    finally:
        for proc in procs:
            proc.stop(timeout=30)
    return figs


def med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


LABELS = {"jh": "JupyterHub + CHP", "before": "fleethub up (before)", "fh": "fleethub up"}
FIGURES = (  # label, value of a Figures, format, goal of fleethub / JupyterHub
    ("ready (s)", lambda f: f.ready_s, "{:.2f}", ("≤ 1", lambda r: r <= 1)),
    ("idle RSS (MB)", lambda f: f.rss / MB, "{:.0f}", ("≤ 1.5", lambda r: r <= 1.5)),
    ("idle PSS (MB)", lambda f: f.pss / MB, "{:.0f}", None),
    ("idle CPU (% of a core)", lambda f: 100 * f.cpu_share, "{:.2f}", None),
)


def table(rounds: list[dict[str, Figures]], args: argparse.Namespace) -> str:
    keys = [k for k in ("jh", "before", "fh") if k in rounds[0]]
    others = [k for k in keys if k != "jh"]
    command = f"`python bench/footprint/run.py --rounds {args.rounds} --settle {args.settle:g} --idle {args.idle:g}"
    if args.fleethub_args:
        command += f" --fleethub-args {shlex.quote(args.fleethub_args)}"
    if args.before:
        command += f" --before {args.before}" + (f" --before-args {shlex.quote(args.before_args)}"
                                                 if args.before_args else "")
    lines = [command + "`, " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
             + f", {os.cpu_count()} cores, a machine shared with other work (load average with each figure).", "",
             "| round | figure | " + " | ".join(LABELS[k] for k in keys) + " | "
             + " | ".join(f"{LABELS[k]} / JupyterHub" for k in others) + " | goal | load avg (1 min) |",
             "|---|---|" + "---|" * (len(keys) + len(others)) + "---|---|"]

    def row(label: str, values: dict[str, float], fmt: str, goal: tuple[str, Any] | None, load: str) -> str:
        ratios = [f"{values[k] / values['jh']:.2f}" if values["jh"] else "—" for k in others]
        if goal is not None:
            verdict = f"{goal[0]}: {'PASS' if values['jh'] and goal[1](values['fh'] / values['jh']) else 'MISS'}"
        elif "CPU" in label:
            verdict = f"fleethub < 1 %: {'PASS' if values['fh'] < 1 else 'MISS'}"
        else:
            verdict = "—"
        return " | ".join([*(fmt.format(values[k]) for k in keys), *ratios, verdict, load])

    for i, figs in enumerate(rounds, 1):
        for label, value, fmt, goal in FIGURES:
            load = (", ".join(f"{k} {figs[k].ready_load:.2f}" for k in keys) if label.startswith("ready")
                    else f"{figs['fh'].idle_load:.2f}")
            lines.append(f"| {i} | {label} | " + row(label, {k: value(figs[k]) for k in keys}, fmt, goal, load) + " |")
    for label, value, fmt, goal in FIGURES:
        medians = {k: med([value(figs[k]) for figs in rounds]) for k in keys}
        lines.append(f"| median | {label} | " + row(label, medians, fmt, goal, "") + " |")
    lines += ["", "Idle memory and CPU by process (last round; RSS / PSS in MB, CPU in % of a core):", "",
              "| hub | part | RSS | PSS | CPU |", "|---|---|---|---|---|"]
    for key in keys:
        for part, (rss, pss, cpu) in sorted(rounds[-1][key].by_part.items(), key=lambda kv: -kv[1][0]):
            lines.append(f"| {LABELS[key]} | {part} | {rss / MB:.0f} | {pss / MB:.0f} | {100 * cpu:.2f} |")
    return "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> None:
    say(f"JupyterHub {hubs.ensure_jupyterhub()}")
    chp = hubs.ensure_chp()
    base = Path(tempfile.mkdtemp(prefix="fleethub-footprint-"))
    rounds = []
    try:
        for n in range(args.rounds):
            rounds.append(await one_round(n, args, chp, base))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    text = table(rounds, args)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settle", type=float, default=30.0, help="seconds of idle before RSS is read")
    p.add_argument("--idle", type=float, default=60.0, help="seconds over which idle CPU is measured")
    p.add_argument("--fleethub-args", default="", help="extra arguments of `fleethub up`")
    p.add_argument("--before", default=None,
                   help="a checkout of an earlier fleethub (e.g. `git worktree add --detach /tmp/before main`) whose "
                        "`fleethub up` is measured in the same run, with this interpreter")
    p.add_argument("--before-args", default="", help="extra arguments of the earlier checkout's `fleethub up`")
    p.add_argument("--out", default=None, help="write the table (markdown) here")
    p.add_argument("--keep", action="store_true", help="keep the hubs' work directories")
    args = p.parse_args()
    if args.rounds < 1 or args.settle < 0 or args.idle <= 0:
        p.error("--rounds must be ≥ 1, --settle ≥ 0 and --idle > 0")
    return args


if __name__ == "__main__":
    try:
        asyncio.run(main(parse()))
    except BenchError as exc:
        raise SystemExit(f"bench/footprint: {exc}") from None
