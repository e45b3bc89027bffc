"""F14, F15, F25: one spawner worker cut off from PostgreSQL, cut off from NATS, or with its clock 5 minutes
ahead, in a stack with two workers.

Partitions go through a TCP relay (`tests/support/relay.py`) between that one worker and PostgreSQL or NATS;
`blackhole()` stops forwarding with every socket kept open, as a dropped route does. The other worker is
held with SIGSTOP while the cut-off worker takes the spawn (see `test_worker_crashes`).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleethub.shared.events import ServerReady
from fleethub.shared.settings import child_env
from tests.faults.test_worker_crashes import (
    CONVERGENCE,
    PULL_EXPIRY,
    Stack,
    named_by,
    server_processes,
    two_worker_stack,
)
from tests.support.cluster import wait_for
from tests.support.relay import Relay

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SLOW_SERVER = {"FAKE_START_DELAY": "3"}  # the server answers 3 s after it starts: a spawn stays in flight


async def _log_has(stack: Stack, text: str, index: int = 0) -> bool:
    return text in (stack.cluster.log_dir / f"spawner-{index}.log").read_text()


async def _spawn_on_the_cut_worker(stack: Stack, user: str) -> str:
    """With the other worker held, request `user`'s server and wait until the first worker has started its
    process (its pid recorded); the first worker's replica id."""
    r = await stack.api.post(f"/hub/api/users/{user}/server")
    assert r.status_code in (201, 202), r.text

    async def started() -> str | None:
        row = await stack.row(user)
        return row.worker_id if row is not None and "pid" in row.state else None

    worker: str = await wait_for(started, timeout=30, what=f"{user}'s server started\n{stack.cluster.logs()}")
    return worker


async def _running_elsewhere(stack: Stack, user: str, cut: str) -> bool:
    """`user`'s server runs under another worker than `cut`, answers through the proxy, and is the one
    user-server process of `user` on the machine, the one its state names."""
    row = await stack.row(user)
    procs = server_processes(user)
    return (row is not None and row.status == "running" and row.worker_id not in (None, cut) and len(procs) == 1
            and named_by(row, procs[0]) and await stack.through_proxy(user))


@pytest.fixture
async def pg_relay(database_url: str) -> AsyncIterator[Relay]:
    async with Relay.for_url(database_url) as relay:
        yield relay


@pytest.fixture
async def nats_relay(nats_url: str) -> AsyncIterator[Relay]:
    async with Relay.for_url(nats_url) as relay:
        yield relay


async def test_f14_postgres_cut_off_from_a_worker_holding_leases(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, pg_relay: Relay) -> None:
    async with two_worker_stack(tmp_path, nats_url, database_url, nats_namespace, server_env=SLOW_SERVER,
                                armed={"database_url": pg_relay.url_for(database_url)}) as stack:
        await stack.hold_other()
        try:
            cut = await _spawn_on_the_cut_worker(stack, "steady")
            await wait_for(lambda: stack.through_proxy("steady"), timeout=30, what="steady running")
            steady_pid = server_processes("steady")
            assert await _spawn_on_the_cut_worker(stack, "crash") == cut  # in flight: waiting for HTTP
            pg_relay.blackhole()
            t0 = time.monotonic()
        finally:
            stack.release_other()
        # the other worker adopts both once the leases expire: the running one kept, the pending one finished
        await wait_for(lambda: _running_elsewhere(stack, "steady", cut), timeout=CONVERGENCE,
                       what=f"steady adopted\n{stack.cluster.logs()}")
        await wait_for(lambda: _running_elsewhere(stack, "crash", cut), timeout=CONVERGENCE,
                       what=f"crash's spawn finished by the other worker\n{stack.cluster.logs()}")
        print(f"\nconverged {time.monotonic() - t0:.2f}s after the cut")
        assert server_processes("steady") == steady_pid  # kept, not restarted
        await wait_for(lambda: _log_has(stack, "abandoning"), timeout=CONVERGENCE,
                       what="the cut worker abandoning its spawn")
        # healed, the old worker does nothing stale: it renews nothing it lost, restarts and stops nothing
        pg_relay.heal()
        await wait_for(lambda: _log_has(stack, "leases renewed again"), timeout=30,
                       what=f"the cut worker renewing again\n{stack.cluster.logs()}")
        crash = await stack.row("crash")
        assert crash is not None
        # a window of two leases in which a stale worker would act (renew, adopt, poll, finish its spawn):
        # what is asserted is that nothing changed, so only the window's length is chosen here
        await asyncio.sleep(2 * stack.cluster.settings.spawner.lease_ttl)
        assert await _running_elsewhere(stack, "steady", cut) and await _running_elsewhere(stack, "crash", cut)
        assert server_processes("steady") == steady_pid
        assert await stack.events(ServerReady, crash.spawn_id) == 1
        assert stack.armed.poll() is None  # the cut worker lived through it
        # and the hub works on: a stop now is carried out by whichever worker takes it
        r = await stack.api.delete("/hub/api/users/crash/server")
        assert r.status_code in (202, 204), r.text

        async def stopped() -> bool:
            row = await stack.row("crash")
            return row is not None and row.status == "stopped" and not server_processes("crash")

        await wait_for(stopped, timeout=CONVERGENCE, what=f"crash stopped\n{stack.cluster.logs()}")


async def test_f15_nats_cut_off_from_a_worker_with_a_spawn_in_flight(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, nats_relay: Relay) -> None:
    async with two_worker_stack(tmp_path, nats_url, database_url, nats_namespace, server_env=SLOW_SERVER,
                                armed={"nats_url": nats_relay.url_for(nats_url)}) as stack:
        await stack.hold_other()
        try:
            cut = await _spawn_on_the_cut_worker(stack, "crash")
            nats_relay.blackhole()
            t0 = time.monotonic()
        finally:
            stack.release_other()
        # it cannot write the route: it hands the spawn over (the server kept), the other worker finishes it
        await wait_for(lambda: _running_elsewhere(stack, "crash", cut), timeout=30,
                       what=f"crash's spawn finished by the other worker\n{stack.cluster.logs()}")
        print(f"\nconverged {time.monotonic() - t0:.2f}s after the cut")
        crash = await stack.row("crash")
        assert crash is not None
        # the command the cut worker holds comes back to the other one after AckWait (30 s): a no-op
        consumer = "spawner-local"

        async def settled() -> bool:
            info = await stack.bus.js.consumer_info(stack.bus.names.cmd_stream, consumer)
            return info.num_ack_pending == 0 and info.num_redelivered == 0

        await wait_for(settled, timeout=60, interval=0.5, what="the in-flight command settled by the other worker")
        # healed, the cut worker's late nak or ack is harmless
        nats_relay.heal()
        await wait_for(lambda: _log_has(stack, "nats reconnected"), timeout=30,
                       what=f"the cut worker back on NATS\n{stack.cluster.logs()}")
        await asyncio.sleep(2 * stack.cluster.settings.spawner.lease_ttl)  # a window for a stale act (see F14)
        r = await stack.api.get("/hub/api/users/crash")
        assert r.json()["servers"][""]["ready"] is True
        assert await _running_elsewhere(stack, "crash", cut)
        assert await stack.events(ServerReady, crash.spawn_id) == 1
        assert stack.armed.poll() is None


# A real spawner process whose wall clock runs 5 minutes ahead: `time.time` and fleethub's one wall-clock
# function (`fleethub.shared.events.utcnow`, imported by name everywhere else, so patched before anything
# imports it) are shifted before the worker starts. faketime/LD_PRELOAD are not available here; fleethub
# reads the wall clock nowhere else, and asyncio's timers use the monotonic clock, as they should.
SKEWED_SPAWNER = """
import sys, time
from datetime import timedelta
import fleethub.shared.events as events
SKEW = timedelta(minutes=5)
_time, _utcnow = time.time, events.utcnow
time.time = lambda: _time() + SKEW.total_seconds()
events.utcnow = lambda: _utcnow() + SKEW
assert events.utcnow() - _utcnow() > SKEW - timedelta(seconds=1)
sys.argv = ["fleethub", "run", "spawner"]
import runpy
runpy.run_module("fleethub", run_name="__main__", alter_sys=True)
"""


async def test_f25_a_worker_clock_five_minutes_ahead(tmp_path: Path, nats_url: str, database_url: str,
                                                     nats_namespace: str) -> None:
    # leases of 6 s: a worker held (SIGSTOP) for the 2-3 s it takes the other to start a server keeps them
    async with two_worker_stack(tmp_path, nats_url, database_url, nats_namespace, lease_ttl=6) as stack:
        cluster = stack.cluster
        # replace the first (ordinary) worker with the skewed one
        stack.armed.terminate()
        stack.armed.wait(15)
        log = open(cluster.log_dir / "skewed.log", "ab")
        skewed = subprocess.Popen([sys.executable, "-c", SKEWED_SPAWNER], env=child_env(cluster.settings),
                                  stdout=log, stderr=subprocess.STDOUT)
        log.close()
        cluster.procs.append(("spawner", skewed))
        await wait_for(lambda: _has(cluster.log_dir / "skewed.log", "running (backend"), timeout=60,
                       what=f"the skewed worker running\n{cluster.logs()}")
        # the other worker owns a server; the skewed one, held, must not see its live lease as expired
        skewed.send_signal(signal.SIGSTOP)  # the other worker takes this spawn
        try:
            await asyncio.sleep(PULL_EXPIRY)
            r = await stack.api.post("/hub/api/users/steady/server")
            assert r.status_code in (201, 202), r.text
            await wait_for(lambda: stack.through_proxy("steady"), timeout=30, what="steady running")
        finally:
            skewed.send_signal(signal.SIGCONT)
        steady = await stack.row("steady")
        assert steady is not None
        owner = steady.worker_id
        # the skewed worker takes a spawn of its own (the other held), and both keep their servers
        await stack.hold_other()
        try:
            r = await stack.api.post("/hub/api/users/crash/server")
            assert r.status_code in (201, 202), r.text
            await wait_for(lambda: stack.through_proxy("crash"), timeout=30, what="crash running")
        finally:
            stack.release_other()
        crash = await stack.row("crash")
        assert crash is not None and crash.worker_id not in (None, owner)
        for _ in range(10):  # ten renewals by the owner (every ttl/4): 2.5 lease lifetimes of adoption passes
            row = await stack.row("steady")
            assert row is not None and row.worker_id == owner and row.status == "running"
            row = await stack.row("crash")
            assert row is not None and row.worker_id == crash.worker_id and row.status == "running"
            before = row.lease_expires if (row := await stack.row("steady")) is not None else None
            await wait_for(lambda b=before: _lease_moved(stack, "steady", b), timeout=5,  # type: ignore[misc]
                           what="the owner renewing its lease")
        # the owner dies: the skewed worker adopts its server once the lease expires by PostgreSQL's clock
        stack.other.kill()
        stack.other.wait()
        t0 = time.monotonic()

        async def adopted() -> bool:
            row = await stack.row("steady")
            return (row is not None and row.worker_id == crash.worker_id and row.status == "running"
                    and await stack.through_proxy("steady") and len(server_processes("steady")) == 1)

        await wait_for(adopted, timeout=CONVERGENCE, what=f"steady adopted by the skewed worker\n{cluster.logs()}")
        print(f"\nadopted {time.monotonic() - t0:.2f}s after the owner was killed")
        assert await stack.events(ServerReady, steady.spawn_id) == 1
        assert await stack.events(ServerReady, crash.spawn_id) == 1


async def _has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text()


async def _lease_moved(stack: Stack, user: str, before: object) -> bool:
    row = await stack.row(user)
    return row is not None and row.lease_expires != before
