"""F22: every fleethub process killed at once and started again, NATS and PostgreSQL kept, with servers running.

No user server is restarted or stopped (same pids, no new `server.ready` or `server.stopped` for its
spawn); the routes bucket keeps every route while fleethub is down; a restarted proxy node serves only
once it has the whole table (a request is refused until then, never answered from a partial table); and a
server killed while fleethub was down is found dead by the adopting worker and cleaned up (stopped,
route gone). The plan says 200 servers; a 2-core CI machine shared with other suites runs 40.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from fleethub.shared.names import server_prefix
from tests.support.cluster import wait_for
from tests.support.faultstack import FaultStack, T, fault_stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVERS = 40


async def _running(stack: FaultStack) -> int:
    snap = await stack.oracle.snapshot()
    return len(snap.running)


async def _probe(stack: FaultStack, users: list[str], stop: asyncio.Event, bad: list[str]) -> int:
    """GET every server through every node, round after round, until `stop`; a refused connection is
    a node not serving yet, any answer but the server's own 200 is recorded in `bad`. Returns the answers."""
    answered = 0
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set():
            for node in range(len(stack.proxy_nodes)):
                for user in users:
                    url = f"{stack.proxy_url(node)}{server_prefix(user)}api"
                    try:
                        r = await client.get(url)
                    except httpx.ConnectError:
                        continue
                    except httpx.HTTPError as exc:
                        bad.append(f"{url}: {exc!r}")
                        continue
                    answered += 1
                    if r.status_code != 200 or r.json().get("user") != user:
                        bad.append(f"{url}: {r.status_code} {r.text[:100]}")
            await asyncio.sleep(0.05)
    return answered


async def test_f22_cold_restart_keeps_every_server(tmp_path: Path, nats_url: str, database_url: str,
                                                   nats_namespace: str) -> None:
    async with fault_stack(tmp_path, nats_url, database_url, nats_namespace,
                           api={"slow_spawn_timeout": 0.2}) as stack:
        users = [f"u{i:03d}" for i in range(SERVERS)]
        await stack.create_users(*users)
        answers = await asyncio.gather(*(stack.start_server(u) for u in users))
        assert all(r.status_code in (201, 202) for r in answers), [r.text for r in answers if r.status_code >= 300]
        await wait_for(lambda: _running_all(stack), timeout=120, interval=0.5, what=f"{SERVERS} servers running")
        before = await stack.oracle.converged(timeout=30)
        pids = {p.user: p.pid for p in before.processes}
        spawns = {key[0]: s["spawn_id"] for key, s in before.running.items()}
        assert len(pids) == SERVERS

        # everything at once: kill -9 every service process (user servers keep running, re-parented to us)
        t0 = time.monotonic()
        for proc in stack.procs.values():
            proc.popen.send_signal(signal.SIGKILL)
        for proc in stack.procs.values():
            proc.popen.wait(10)
        victim = users[0]
        os.killpg(pids[victim], signal.SIGKILL)  # dies while nobody watches
        assert len(await stack.oracle.routes()) == SERVERS  # the bucket keeps every route meanwhile

        stop, bad = asyncio.Event(), list[str]()
        survivors = users[1:]
        prober = asyncio.create_task(_probe(stack, survivors, stop, bad))
        try:
            for proc in stack.procs.values():
                proc.restart()
            await stack.cluster.wait_hub(60)
            await stack.wait_stopped(victim, timeout=30)
            restarted = time.monotonic() - t0
            after = await stack.oracle.converged(timeout=30)
        finally:
            stop.set()
            answered = await prober
        print(f"\nF22: {SERVERS} servers; everything back and converged {restarted:.1f}s after the kill; "
              f"{answered} requests answered through the proxies during the restart")
        assert bad == [], bad[:20]
        assert answered > 0

        # the survivors: same processes, same spawns, never announced again; the victim cleaned up
        assert {p.user: p.pid for p in after.processes} == {u: pids[u] for u in survivors}
        assert {key[0]: s["spawn_id"] for key, s in after.running.items()} == {u: spawns[u] for u in survivors}
        for user in survivors:
            assert stack.events.count("server.ready", spawn_id=spawns[user]) == 1
            assert stack.events.count("server.stopped", spawn_id=spawns[user]) == 0
        event = await stack.events.wait("server.stopped", spawn_id=spawns[victim], timeout=T)
        assert event.data["reason"] == "exited"
        assert (await stack.server_state(victim) or {})["status"] == "stopped"


async def _running_all(stack: FaultStack) -> bool:
    return await _running(stack) == SERVERS
