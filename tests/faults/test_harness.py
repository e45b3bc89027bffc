"""The harness itself: the stack comes up and runs a server, the oracle agrees and notices what is wrong,
and the relay partitions, heals, resets and delays a link."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time

import pytest

from tests.support.cluster import wait_for
from tests.support.faultstack import FaultStack
from tests.support.relay import Relay

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_stack_runs_a_server_and_the_oracle_agrees(stack: FaultStack) -> None:
    await stack.create_users("alice")
    r = await stack.start_server("alice")
    assert r.status_code in (201, 202), r.text
    await stack.wait_ready("alice")
    snap = await stack.oracle.converged()
    assert list(snap.running) == [("alice", "")]
    assert [p.user for p in snap.processes] == ["alice"]
    for node in range(2):
        assert (await stack.reach("alice", node=node)).json()["user"] == "alice"
    spawn_id = snap.running[("alice", "")]["spawn_id"]
    await stack.events.wait("server.ready", spawn_id=spawn_id)
    assert stack.events.ready_counts() == {spawn_id: 1}

    # what the oracle reports when something is wrong: a user-server process nobody runs (fleethub's
    # reconciler would repair a stray route at once, but nothing of it ends a process it does not know),
    # and a proxy node that does not answer
    ghost_env = {**os.environ, "JUPYTERHUB_SERVICE_PREFIX": "/user/ghost/", "JUPYTERHUB_USER": "ghost"}
    ghost = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=ghost_env)
    try:
        stack["proxy-1"].stop()
        try:
            findings = await stack.oracle.check()
        finally:
            stack["proxy-1"].cont()
        kinds = {(f.invariant, f.subject) for f in findings}
        assert ("a.processes", "ghost/") in kinds and ("c.proxy", "proxy-1") in kinds, findings
        with pytest.raises(AssertionError, match=rf"(?s)a\.processes.*ghost/: orphan processes \[{ghost.pid}\]"):
            await stack.oracle.converged(timeout=0.5)
    finally:
        ghost.kill()
        ghost.wait()

    r = await stack.stop_server("alice")
    assert r.status_code in (202, 204), r.text
    await stack.wait_stopped("alice")
    await stack.oracle.converged()
    assert stack.oracle.last is not None and stack.oracle.last.processes == []

    # one more replica whose NATS and PostgreSQL links go through relays (to partition it alone)
    s = stack.settings
    async with Relay.for_url(s.nats_url) as to_nats, Relay.for_url(s.require_database_url()) as to_pg:
        worker = stack.start("spawner", nats_url=to_nats.url_for(s.nats_url),
                             database_url=to_pg.url_for(s.require_database_url()))
        assert worker.name == "spawner-2"

        async def linked() -> bool:
            return to_nats.connections > 0 and to_pg.connections > 0

        await wait_for(linked, timeout=60, what="spawner-2 connected through both relays")
        worker.kill()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    writer.close()


async def test_relay_blackholes_heals_resets_and_delays() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, Relay("127.0.0.1", port) as relay:
        assert relay.url_for(f"postgresql+asyncpg://u:p@127.0.0.1:{port}/db?x=1") == \
            f"postgresql+asyncpg://u:p@127.0.0.1:{relay.port}/db?x=1"
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"one")
        assert await asyncio.wait_for(reader.read(10), 5) == b"one"

        relay.blackhole()
        writer.write(b"two")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(10), 0.3)
        assert relay.connections == 1  # the partition keeps the socket open
        relay.heal()
        assert await asyncio.wait_for(reader.read(10), 5) == b"two"  # held, then delivered

        relay.latency(0.3)
        t0 = time.monotonic()
        writer.write(b"three")
        assert await asyncio.wait_for(reader.read(10), 5) == b"three"
        assert time.monotonic() - t0 >= 0.5  # 0.3 s each way
        relay.latency(0)

        relay.reset()
        assert await asyncio.wait_for(reader.read(10), 5) == b""  # closed under it
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)  # and it accepts again
        writer.write(b"four")
        assert await asyncio.wait_for(reader.read(10), 5) == b"four"
        writer.close()
