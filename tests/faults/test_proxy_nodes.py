"""Proxy nodes dying, joining and cut off from NATS (F9, F10, F16): a node answers only from its whole
table, the others are unaffected, a cut-off node serves its last table and never another user's server,
and every node's table ends equal to the route bucket (the oracle)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from fleethub.shared.net import free_port
from fleethub.shared.settings import FAULT_VAR
from tests.integration.proxy.test_websocket import EchoServer, _ws
from tests.support.cluster import wait_for
from tests.support.faultstack import FaultStack, Proc
from tests.support.oracle import ProxyNode
from tests.support.relay import Relay

pytestmark = [pytest.mark.integration, pytest.mark.faults]

HOLD_AFTER_SNAPSHOT = {FAULT_VAR: "proxy.after_snapshot_before_serve:stop"}


def _state(pid: int) -> str:
    """The process state letter from /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def _stopped_at_the_point(proc: Proc) -> bool:
    return proc.alive and _state(proc.pid) == "T"


async def _refused(port: int) -> bool:
    """Whether a connection to `port` is refused (nothing listening): no answer of any kind."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def _spawn_all(stack: FaultStack, users: list[str]) -> None:
    await stack.create_users(*users)
    answers = await asyncio.gather(*(stack.start_server(u) for u in users))
    assert all(r.status_code in (201, 202) for r in answers), [r.text for r in answers]
    for u in users:
        await stack.wait_ready(u, timeout=30)


class Traffic:
    """Requests to `<prefix>api` of `users` through one node, over and over; every answer recorded."""

    def __init__(self, base: str, users: list[str]) -> None:
        self.base = base
        self.users = users
        self.answers: list[tuple[str, int, Any]] = []  # (user asked for, status, user that answered)
        self.refused = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Traffic:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        i = 0
        async with httpx.AsyncClient(timeout=10) as client:
            while not self._stop.is_set():
                user = self.users[i % len(self.users)]
                i += 1
                try:
                    r = await client.get(f"{self.base}/user/{user}/api", follow_redirects=False)
                except httpx.TransportError:
                    self.refused += 1  # the node is down: refused, never answered wrongly
                    await asyncio.sleep(0.01)
                    continue
                who = r.json().get("user") if r.status_code == 200 else None
                self.answers.append((user, r.status_code, who))
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def __repr__(self) -> str:
        task = self._task
        failed = task.exception() if task is not None and task.done() and not task.cancelled() else None
        return f"<traffic to {self.base}: {len(self.answers)} answers, {self.refused} refused, failed: {failed!r}>"

    def wrong(self) -> list[tuple[str, int, Any]]:
        """Answers from another user's server (never allowed)."""
        return [a for a in self.answers if a[1] == 200 and a[2] != a[0]]


async def _first_answers(base: str, users: dict[str, bool]) -> dict[str, tuple[int, Any]]:
    """Once the node accepts a connection: its answers for every user on that first connection."""
    port = int(base.rsplit(":", 1)[1])
    await wait_for(lambda: _accepts(port), timeout=30, interval=0.01, what=f"{base} to accept")
    out: dict[str, tuple[int, Any]] = {}
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=1)) as client:
        for user in users:
            r = await client.get(f"{base}/user/{user}/api", follow_redirects=False)
            out[user] = (r.status_code, r.json().get("user") if r.status_code == 200 else None)
    return out


async def _accepts(port: int) -> bool:
    return not await _refused(port)


def _expect(answers: dict[str, tuple[int, Any]], running: dict[str, bool]) -> None:
    for user, up in running.items():
        status, who = answers[user]
        assert (status, who) == ((200, user) if up else (302, None)), (user, answers)


async def _echo_route(stack: FaultStack, echo: EchoServer) -> None:
    """A route to a websocket echo server, written through proxy-0's route API (a `path.` route)."""
    token = stack.settings.proxy.auth_token
    assert token is not None
    api = f"http://127.0.0.1:{stack.proxy_nodes[0].api_port}/api/routes/ws-echo"
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(api, json={"target": f"http://127.0.0.1:{echo.port}"},
                              headers={"Authorization": f"token {token.get_secret_value()}"})
        assert r.status_code == 201, r.text


async def test_f9_a_killed_node_restarts_serving_its_whole_table_before_anything_else(stack: FaultStack) -> None:
    users = [f"f9u{i}" for i in range(5)]
    await _spawn_all(stack, users)
    echo = await EchoServer().start()
    traffic: list[Traffic] = []
    ws: Any = None
    try:
        await _echo_route(stack, echo)
        node0, node1 = stack.proxy_url(0), stack.proxy_url(1)
        for base in (node0, node1):
            await wait_for(lambda b=base: _answers_ws(b), timeout=10, what=f"the echo route on {base}")
        ws = await _ws(node1, "/ws-echo/")
        await ws.send("before")
        assert await ws.recv() == "before"
        traffic = [Traffic(node0, users).start(), Traffic(node1, users).start()]
        await asyncio.sleep(0.5)

        stack["proxy-1"].kill()
        # the websocket through the dead node is closed; the client reconnects through another node
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        async with _ws(node0, "/ws-echo/") as again:
            await again.send("after")
            assert await again.recv() == "after"
        # the table changes while the node is down: one server stops, another starts
        assert (await stack.stop_server(users[0])).status_code in (202, 204)
        await stack.wait_stopped(users[0])
        await _spawn_all(stack, ["f9late"])
        running = {**{u: u != users[0] for u in users}, "f9late": True}

        # restarted, it loads the table and halts before serving: nothing is answered, connections are refused
        proc = stack["proxy-1"].restart(extra_env=HOLD_AFTER_SNAPSHOT)
        await wait_for(lambda: _stopped_at_the_point(proc), timeout=30, what=f"proxy-1 at the crash point\n"
                                                                              f"{stack.logs()}")
        port1 = stack.proxy_nodes[1].port
        assert await _refused(port1)
        proc.cont()
        # the very first connection it accepts is answered from the whole, current table
        _expect(await _first_answers(node1, running), running)
    finally:
        for t in traffic:
            await t.stop()
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        await echo.stop()
    other, restarted = traffic
    assert other.refused == 0 and not other.wrong(), (other.refused, other.wrong())
    assert all(status in (200, 302) for _, status, _ in other.answers), other.answers[-20:]
    assert not restarted.wrong() and restarted.refused > 0, restarted.wrong()
    await stack.oracle.converged()


async def _answers_ws(base: str) -> bool:
    try:
        async with _ws(base, "/ws-echo/") as ws:
            await ws.send("ping")
            return bool(await ws.recv() == "ping")
    except Exception:
        return False


async def test_f10_a_node_joining_during_spawn_churn_serves_only_the_whole_table(stack: FaultStack) -> None:
    users = [f"f10u{i}" for i in range(8)]
    await stack.create_users(*users)
    stop = asyncio.Event()
    changes = 0

    async def churn(user: str) -> None:  # as fast as the stack goes: start, wait ready, stop, again
        nonlocal changes
        while not stop.is_set():
            r = await stack.start_server(user)
            if r.status_code in (201, 202):
                await stack.wait_ready(user, timeout=30)
                changes += 1
            r = await stack.stop_server(user)
            if r.status_code in (202, 204):
                await stack.wait_stopped(user, timeout=30)
                changes += 1

    churners = [asyncio.create_task(churn(u)) for u in users]
    try:
        await wait_for(lambda: asyncio.sleep(0, changes >= 8), timeout=60, what="the churn under way")
        proc = stack.start_proxy(extra_env=HOLD_AFTER_SNAPSHOT)
        node = stack.proxy_nodes[-1]
        base = f"http://127.0.0.1:{node.port}"
        await wait_for(lambda: _stopped_at_the_point(proc), timeout=30, what=f"the new node at the crash point\n"
                                                                             f"{stack.logs()}")
        assert await _refused(node.port)  # its table is loaded, yet it answers nothing before it serves
        before = changes
        await asyncio.sleep(1.0)  # the churn changes the bucket while the node is held
        proc.cont()
        traffic = Traffic(base, users).start()
        try:
            await wait_for(lambda: asyncio.sleep(0, changes >= before + 16 and len(traffic.answers) >= 40),
                           timeout=60, what="more churn, with traffic through the new node")
        except AssertionError:
            raise AssertionError(f"{traffic}, {changes - before} changes\n{stack.logs()}") from None
        await traffic.stop()
    finally:
        stop.set()
        await asyncio.gather(*churners, return_exceptions=True)
    assert not traffic.wrong(), traffic.wrong()
    assert traffic.answers and all(status in (200, 302, 502, 503) for _, status, _ in traffic.answers), \
        sorted({status for _, status, _ in traffic.answers})
    print(f"\nF10: {changes} starts/stops; the new node answered {len(traffic.answers)} requests, "
          f"none from another user's server")
    await stack.oracle.converged(timeout=20)  # the new node's table equals the bucket


@pytest.fixture
async def relay(stack: FaultStack) -> AsyncIterator[Relay]:
    r = await Relay.for_url(stack.settings.nats_url).start()
    try:
        yield r
    finally:
        await r.close()


async def test_f16_a_node_cut_off_from_nats_serves_its_last_table_and_resyncs(stack: FaultStack,
                                                                           relay: Relay) -> None:
    port, api_port = free_port(), free_port()
    proc = stack.start("proxy", name="proxy-cut", nats_url=relay.url_for(stack.settings.nats_url),
                       proxy={"port": port, "api_port": api_port})
    stack.proxy_nodes.append(ProxyNode(proc.name, port, api_port, alive=lambda: proc.alive))
    cut = f"http://127.0.0.1:{port}"
    await wait_for(lambda: _status(f"{cut}/hub/api/", 200), timeout=30, what=f"proxy-cut\n{stack.logs()}")
    await _spawn_all(stack, ["alice", "bob"])
    await stack.oracle.converged()

    relay.blackhole()
    relay.reset()  # the node's NATS connection drops, and every reconnection hangs
    t0 = time.monotonic()
    assert (await stack.stop_server("bob")).status_code in (202, 204)
    await stack.wait_stopped("bob")
    await _spawn_all(stack, ["carol"])  # the spawner waits for the cut node at most its bound
    during = Traffic(cut, ["alice", "bob", "carol"]).start()
    await asyncio.sleep(2.0)
    await during.stop()
    # still cut off: alice through her last route; bob's deleted server is not reached (503: refused
    # upstream, or 302 to the hub), never someone else's; carol, unknown here, goes to the hub
    seen = {(u, s) for u, s, _ in during.answers}
    assert not during.wrong() and during.refused == 0, (during.wrong(), during.refused)
    assert {s for u, s in seen if u == "alice"} == {200}, seen
    assert {s for u, s in seen if u == "bob"} <= {302, 502, 503}, seen
    assert {s for u, s in seen if u == "carol"} == {302}, seen
    print(f"\nF16: cut off for {time.monotonic() - t0:.1f} s, {len(during.answers)} answers, all from the "
          "last table or the hub")

    relay.heal()
    await stack.oracle.converged()  # resynced: its table equals the bucket again
    _expect(await _first_answers(cut, {"alice": True, "bob": False, "carol": True}),
            {"alice": True, "bob": False, "carol": True})


async def _status(url: str, status: int) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(url)).status_code == status
