"""Spawn-to-ready per backend, side by side in one run on one hub (not in CI; never asserts).

One fleethub (auth, api, spawner, proxy as real processes, `tests.support.cluster.running_stack`; embedded
NATS and PostgreSQL in a temporary directory unless `FLEETHUB_TEST_NATS_URL` / `FLEETHUB_TEST_DATABASE_URL`
name others) offers four profiles, one per backend: `local` (the worker's account), `system-user` (a Unix
account made for the run, the root worker starting it directly), `docker` (a private dockerd with the test
image, `tests.support.dockerd`), `batch` (a private one-node Slurm, `tests.support.slurm`, the job submitted
as a Unix account made for the run). Every server is the real `jupyterhub-singleuser` of this venv. One spawner
worker serves all four backends.

Each round, for each backend in turn (the order rotates from round to round, so drift hits all alike):
`POST /hub/api/users/<u>/server {"profile": ...}` with `api.slow_spawn_timeout` large enough that the POST
answers 201 when the server is ready (timed: POST → ready); `GET /user/<u>/api` through the proxy (must be
200); `DELETE /hub/api/users/<u>/server` (also waited for by the api), then the user's model polled until it
lists no server (timed: DELETE → stopped); then, untimed, what the backend left is checked (no process of
the account, no container, no Slurm job). `--warmup` rounds come first and are reported apart (cold
start). Before each spawn the bench waits up to `--quiet-wait` seconds for other processes on the machine
to be quiet (bench/api's way on a shared machine).

Prints the markdown report (median, min, max per backend; load average before and after; machine facts)
and writes it (`--out`, default bench/backends/results.md).

    python bench/backends/run.py [--rounds 5] [--warmup 1] [--quiet-wait 30] [--note TEXT] [--out FILE.md]
                                 [--json FILE] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pwd
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (str(ROOT / "bench" / "proxy"), str(ROOT / "bench" / "api"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import httpx
from others import Others  # bench/api's: CPU of processes not the bench's (a shared machine)

from fleethub.shared.net import free_port
from tests.support.cluster import Cluster, ensure_user, mint_token, running_stack
from tests.support.dockerd import Dockerd, running_dockerd, runtime_volumes, singleuser_command
from tests.support.slurm import Slurm, slurm_cluster
from tests.support.unix_users import python_paths, traversable, unix_user, venv_reachable

SINGLEUSER = str(Path(sys.executable).parent / "jupyterhub-singleuser")
BACKENDS = ("local", "system-user", "docker", "batch")
LOCAL_USER, DOCKER_USER = "benchlocal", "benchdocker"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


@contextlib.contextmanager
def nats_and_postgres(workdir: Path) -> Iterator[tuple[str, str]]:
    """(nats_url, database_url): the ones the environment names (as tests/conftest.py), else embedded."""
    nats_url, pg_url = os.environ.get("FLEETHUB_TEST_NATS_URL"), os.environ.get("FLEETHUB_TEST_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        from fleethub.shared.embedded import EmbeddedNats, EmbeddedPostgres

        if not nats_url:
            nats_url = stack.enter_context(EmbeddedNats(workdir / "nats")).url
        if not pg_url:
            root = workdir / "pg-root"  # PostgreSQL runs as its own system user when we are root: 0711
            root.mkdir()
            root.chmod(0o711)
            pg_url = stack.enter_context(EmbeddedPostgres(root / "pg")).admin_url
        database = f"fh_bench_{secrets.token_hex(4)}"
        _admin_sql(pg_url, f'CREATE DATABASE "{database}"')
        try:
            parts = urlsplit(pg_url)
            yield nats_url, urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{database}", parts.query, ""))
        finally:
            _admin_sql(pg_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _admin_sql(url: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def profiles(dockerd: Dockerd) -> list[dict[str, Any]]:
    return [
        {"display_name": "This machine (the worker's account)", "slug": "local", "default": True, "backend": "local"},
        {"display_name": "My Unix account", "slug": "system-user", "backend": "system-user"},
        {"display_name": "Container (Docker)", "slug": "docker", "backend": "docker",
         "overrides": {"cmd": singleuser_command(), "docker": {"image": dockerd.image, "volumes": runtime_volumes()}}},
        {"display_name": "Slurm job", "slug": "batch", "backend": "batch"},
    ]


def processes_of(uid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid and Path(f"/proc/{entry}/cmdline").read_bytes():
                    out.append(int(entry))
            except OSError:
                continue
    return out


def server_processes(user: str) -> list[int]:
    """Live processes whose environment names `user`'s server (the local backend's servers run as root)."""
    needle = f"JUPYTERHUB_USER={user}\0".encode()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes() + b"\0":
                    out.append(int(entry))
            except OSError:
                continue
    return out


async def quiet_window(wait: float, window: float = 2.0, limit: float = 0.15) -> float | None:
    """Wait up to `wait` seconds for a `window`-second stretch in which other processes use under `limit`
    cores; the seconds waited, or None when no such stretch came (then the spawn runs anyway)."""
    t0 = time.monotonic()
    while True:
        others = Others()
        await asyncio.sleep(window)
        if others.used() / window < limit:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= wait:
            return None


class Bench:
    def __init__(self, cluster: Cluster, dockerd: Dockerd, slurm: Slurm, users: dict[str, str],
                 clients: dict[str, httpx.AsyncClient]) -> None:
        self.cluster, self.dockerd, self.slurm, self.users, self.clients = cluster, dockerd, slurm, users, clients

    def leftovers(self, backend: str) -> str:
        """What the backend's last server left behind (empty: nothing)."""
        user = self.users[backend]
        if backend == "docker":
            left = [c.get("Names") for c in self.dockerd.containers()
                    if dict(c.get("Labels") or {}).get("fleethub.user") == user]  # type: ignore[call-overload]
            return f"containers {left}" if left else ""
        if backend == "batch":
            jobs = self.slurm.live_jobs("%i", "%u", "%T")
            procs = processes_of(pwd.getpwnam(user).pw_uid)
            return f"jobs {jobs}, processes {procs}" if jobs or procs else ""
        if backend == "system-user":
            procs = processes_of(pwd.getpwnam(user).pw_uid)
            return f"processes {procs}" if procs else ""
        procs = server_processes(user)
        return f"processes {procs}" if procs else ""

    async def stopped(self, backend: str) -> bool:
        user = self.users[backend]
        model = (await self.clients[backend].get(f"/hub/api/users/{user}")).json()
        return not model.get("servers")

    async def one(self, backend: str) -> dict[str, Any]:
        """Spawn, reach, stop `backend`'s user once; the timings and what went wrong."""
        user, client = self.users[backend], self.clients[backend]
        out: dict[str, Any] = {"backend": backend, "problems": []}
        others = Others()
        t0 = time.perf_counter()
        r = await client.post(f"/hub/api/users/{user}/server", json={"profile": backend})
        t_all = t0
        ready = time.perf_counter() - t0
        out["post_status"] = r.status_code
        if r.status_code == 201:
            out["ready_s"] = ready
        else:
            out["problems"].append(f"POST answered {r.status_code} after {ready:.2f} s: {r.text[:300]}")
        reach = await client.get(f"/user/{user}/api", follow_redirects=False)
        out["reach_status"] = reach.status_code
        if reach.status_code != 200:
            out["problems"].append(f"GET /user/{user}/api through the proxy: {reach.status_code}")
        t0 = time.perf_counter()
        r = await client.delete(f"/hub/api/users/{user}/server")
        out["delete_status"] = r.status_code
        deadline = time.monotonic() + 120
        while not await self.stopped(backend):
            if time.monotonic() > deadline:
                out["problems"].append("not stopped 120 s after the DELETE")
                break
            await asyncio.sleep(0.02)
        else:
            out["stop_s"] = time.perf_counter() - t0
        out["others_cores"] = others.used() / (time.perf_counter() - t_all)
        if r.status_code not in (202, 204):
            out["problems"].append(f"DELETE answered {r.status_code}: {r.text[:300]}")
        deadline = time.monotonic() + 30
        while (left := self.leftovers(backend)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if left:
            out["problems"].append(f"left behind 30 s after the stop: {left}")
        return out


@contextlib.asynccontextmanager
async def bench_hub(workdir: Path, nats_url: str, database_url: str, dockerd: Dockerd, slurm: Slurm,
                    users: dict[str, str]) -> AsyncIterator[Bench]:
    port = free_port()
    async with running_stack(
        workdir, nats_url, database_url, f"bench{secrets.token_hex(3)}",
        start=("auth", "api", "proxy", "spawner"),
        api={"slow_spawn_timeout": 120, "slow_stop_timeout": 120},
        spawner={"backend": "local", "cmd": [SINGLEUSER], "start_timeout": 60, "http_timeout": 90,
                 "profiles": profiles(dockerd), "batch": {"environment": slurm.env}, "docker": {"host": dockerd.host}},
        proxy={"port": port, "upstream_timeout": 120},
    ) as cluster:
        await cluster.wait_hub(timeout=90)
        clients: dict[str, httpx.AsyncClient] = {}
        try:
            for backend, user in users.items():
                await ensure_user(cluster.settings, user)
                clients[backend] = httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=180, trust_env=False,
                    headers={"Authorization": f"token {mint_token(cluster.settings, user)}"})
            yield Bench(cluster, dockerd, slurm, users, clients)
        finally:
            for client in clients.values():
                await client.aclose()
            slurm.command("scancel", "-u", users["batch"], check=False)


def machine_facts(slurm: Slurm) -> dict[str, str]:
    def first_line(args: list[str]) -> str:
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False,
                               env={**os.environ, **slurm.env})
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "?"

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "fleethub"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return {
        "nproc": first_line(["nproc"]), "cpu": model, "kernel": platform.release(),
        "mem": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "jupyterhub-singleuser": first_line([SINGLEUSER, "--version"]),
        "dockerd": first_line(["/usr/sbin/dockerd", "--version"]),
        "slurm": first_line(["sinfo", "--version"]),
        "fleethub": f"{commit}{' + uncommitted changes in fleethub/' if dirty else ''}",
    }


def _cell(xs: list[float]) -> tuple[str, str, str]:
    if not xs:
        return "—", "—", "—"
    return f"{statistics.median(xs):.2f}", f"{min(xs):.2f}", f"{max(xs):.2f}"


def render(record: dict[str, Any]) -> str:
    facts, plan = record["machine"], record["plan"]
    timed = [r for r in record["results"] if not r["warmup"]]
    lines = [
        "# bench/backends: spawn-to-ready per backend, side by side",
        "",
        f"Run {record['date']} on {facts['nproc']} cores ({facts['cpu']}, {facts['mem']}), fleethub "
        f"{facts['fleethub']}. Command: `{plan['command']}`.",
        "",
        f"One hub (auth, api, spawner, proxy as processes; one spawner worker serving all four backends), four "
        f"profiles; every server is the real jupyterhub-singleuser ({facts['jupyterhub-singleuser']}). "
        f"{plan['rounds']} timed rounds after {plan['warmup']} warm-up round(s); each round spawns, reaches and "
        "stops one server per backend, one at a time, the order rotating between rounds. All requests go "
        "through the hub's proxy with the user's own token.",
        "",
        "- *POST → ready*: `POST /hub/api/users/<u>/server {\"profile\": …}` with `api.slow_spawn_timeout` = 120 s, "
        "so the POST answers 201 once the server answers HTTP (then `GET /user/<u>/api` through the proxy must "
        "be 200).",
        "- *DELETE → stopped*: `DELETE /hub/api/users/<u>/server` (the api waits up to `slow_stop_timeout`) until "
        "the user's model lists no server. What the backend leaves (processes of the account, the container, "
        "the Slurm job) is checked after each stop, untimed.",
        "- *other processes' CPU*: CPU time of processes that are neither the bench nor its descendants (other "
        "work on this shared machine), from the POST to the stopped state, divided by that time (bench/api's "
        "`others.py`); above about 0.1 the figures are understated. Before each spawn the bench waits up to "
        f"{plan['quiet_wait']:g} s for 2 s in which other processes use under 0.15 cores (*quiet before*: how "
        "many spawns found such a window; the others ran anyway).",
        "- local: the worker's own account (root); system-user: a Unix account made for the run, started by the "
        "root worker directly (no sudo mediator); docker: a private dockerd (host networking, vfs storage), "
        "the image imported from a local root filesystem, the venv bind-mounted; batch: a private one-node "
        "Slurm (slurmctld, slurmd, munged), the job submitted with `sudo -E -u <account> sbatch`.",
        "",
        f"Load average (1, 5, 15 min) before the run: {record['load_before']}; after: {record['load_after']}. "
        f"{record['note']}",
        "",
        "| backend | POST → ready median (s) | min | max | DELETE → stopped median (s) | min | max | rounds ok | "
        "cold POST → ready (s) | other processes' CPU (cores, median) | quiet before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend in BACKENDS:
        mine = [r for r in timed if r["backend"] == backend]
        ready = [r["ready_s"] for r in mine if "ready_s" in r]
        stop = [r["stop_s"] for r in mine if "stop_s" in r]
        ok = sum(1 for r in mine if not r["problems"])
        cold = [f"{r['ready_s']:.2f}" for r in record["results"] if r["warmup"] and r["backend"] == backend
                and "ready_s" in r]
        others = [r["others_cores"] for r in mine if "others_cores" in r]
        busy = f"{statistics.median(others):.2f}" if others else "—"
        lines.append(f"| {backend} | {' | '.join(_cell(ready))} | {' | '.join(_cell(stop))} | {ok}/{len(mine)} | "
                     f"{', '.join(cold) or '—'} | {busy} | "
                     f"{sum(1 for r in mine if r.get('quiet_waited_s') is not None)}/{len(mine)} |")
    lines += ["", "Every round, in order (s, POST → ready / DELETE → stopped, and other processes' CPU meanwhile):", ""]
    for n in sorted({r["round"] for r in record["results"]}):
        cells = [f"{r['backend']} {r.get('ready_s', float('nan')):.2f} / {r.get('stop_s', float('nan')):.2f} "
                 f"(others {r.get('others_cores', float('nan')):.2f} cores)"
                 for r in record["results"] if r["round"] == n]
        tag = " (warm-up)" if any(r["warmup"] for r in record["results"] if r["round"] == n) else ""
        lines.append(f"- round {n}{tag}: {'; '.join(cells)}")
    lines += ["", f"Whole run (set-up, rounds, tear-down): {record['wall_s']:.0f} s."]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()) + "."]
    problems = [f"round {r['round']}, {r['backend']}: {p}" for r in record["results"] for p in r["problems"]]
    problems += record["notes"]
    lines += ["", "## Problems", ""] + ([f"- {p}" for p in problems] or ["- none"])
    return "\n".join(lines) + "\n"


async def rounds(bench: Bench, plan: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for n in range(plan.warmup + plan.rounds):
        order = BACKENDS[n % len(BACKENDS):] + BACKENDS[:n % len(BACKENDS)]
        for backend in order:
            waited = await quiet_window(plan.quiet_wait) if plan.quiet_wait > 0 else 0.0
            result = await bench.one(backend)
            result["quiet_waited_s"] = waited
            result.update(round=n + 1, warmup=n < plan.warmup)
            results.append(result)
            say(f"round {n + 1}{' (warm-up)' if n < plan.warmup else ''} {backend}: "
                f"ready {result.get('ready_s', float('nan')):.2f} s, stopped {result.get('stop_s', float('nan')):.2f} s"
                f"{' ! ' + '; '.join(result['problems']) if result['problems'] else ''}")
    return results


def _shown_args() -> list[str]:
    """The command's arguments without the --note text (it is printed in the report itself)."""
    args, out = sys.argv[1:], []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            out.append(arg)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each: one spawn per backend)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (reported as cold starts)")
    parser.add_argument("--out", default=str(HERE / "results.md"), help="markdown output ('' for none)")
    parser.add_argument("--json", default="", help="every figure as JSON")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="before each spawn, wait up to this many seconds for 2 s in which other processes "
                             "use under 0.15 cores (0: do not wait)")
    parser.add_argument("--note", default="", help="a sentence for the report (the machine's state, say)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    plan = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes Unix accounts and starts dockerd, munged and Slurm")
    command = "python bench/backends/run.py " + shlex.join(_shown_args())
    record: dict[str, Any] = {"plan": {"rounds": plan.rounds, "warmup": plan.warmup,
                                       "quiet_wait": plan.quiet_wait, "command": command},
                              "notes": [], "note": plan.note}
    record["load_before"] = load()
    record["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="fleethub-bench-backends-"))
    workdir.chmod(0o711)
    try:
        with unix_user("fhbs") as sysuser, unix_user("fhbb") as batchuser, venv_reachable(), \
                traversable(*python_paths()), running_dockerd() as dockerd, slurm_cluster() as slurm, \
                nats_and_postgres(workdir) as (nats_url, database_url):
            users = {"local": LOCAL_USER, "system-user": sysuser.pw_name, "docker": DOCKER_USER,
                     "batch": batchuser.pw_name}
            record["machine"] = machine_facts(slurm)

            async def go() -> list[dict[str, Any]]:
                async with bench_hub(workdir, nats_url, database_url, dockerd, slurm, users) as bench:
                    try:
                        return await rounds(bench, plan)
                    except BaseException:
                        say(bench.cluster.logs()[-6000:])
                        raise

            record["results"] = asyncio.run(go())
    finally:
        if plan.keep:
            say(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    record["load_after"] = load()
    record["wall_s"] = time.monotonic() - started
    text = render(record)
    print(text)
    if plan.out:
        Path(plan.out).write_text(text)
    if plan.json:
        Path(plan.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
