"""The churn: N users spawning, using (HTTP and a websocket), idling and stopping their servers through the REST API.

Each user loops: start the server (`POST /hub/api/users/<u>/server`), wait until the API says ready,
check it answers through a proxy node, hold it a random while — busy (a websocket echoing through a
proxy node, so the culler leaves it) or idle (so the culler may stop it) — then stop it
(`DELETE`) unless the culler did. Requests go to a random proxy node; a refused connection (a node
being restarted) is retried on the other node and counted. Every answer is counted by endpoint and
status; 5xx answers are kept with their time and body.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus


@dataclass
class ChurnStats:
    """What the churn did and saw."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (endpoint, status)
    errors: list[dict[str, Any]] = field(default_factory=list)  # 5xx and transport errors, with time
    counts: Counter[str] = field(default_factory=Counter)
    ready_seconds: list[float] = field(default_factory=list)
    stop_seconds: list[float] = field(default_factory=list)


class Churn:
    """Drives `users` users against the proxy nodes at `bases` with an admin token."""

    def __init__(self, bases: list[str], token: str, users: list[str], *, hold: tuple[float, float],
                 busy_share: float, t0: float) -> None:
        self.bases = bases
        self.users = users
        self.hold = hold
        self.busy_share = busy_share
        self.t0 = t0
        self.stats = ChurnStats()
        self.client = httpx.AsyncClient(headers={"Authorization": f"token {token}"}, timeout=30,
                                        limits=httpx.Limits(max_connections=64))
        self.stopping = asyncio.Event()

    async def close(self) -> None:
        await self.client.aclose()

    async def request(self, method: str, endpoint: str, path: str, **kw: Any) -> httpx.Response | None:
        """`method path` on a random node, once more on the other node if the connection fails."""
        order = random.sample(self.bases, len(self.bases))
        for attempt, base in enumerate(order):
            try:
                r = await self.client.request(method, base + path, **kw)
            except httpx.TransportError as exc:
                self.stats.counts[f"transport error ({type(exc).__name__}) on {method} {endpoint}"] += 1
                if attempt + 1 < len(order):
                    continue
                self.stats.errors.append({"t": self.elapsed(), "endpoint": f"{method} {endpoint}",
                                          "status": None, "body": repr(exc)[:200]})
                return None
            self.stats.requests[(f"{method} {endpoint}", r.status_code)] += 1
            if r.status_code >= 500:
                self.stats.errors.append({"t": self.elapsed(), "endpoint": f"{method} {endpoint}",
                                          "status": r.status_code, "body": r.text[:300], "node": base})
            return r
        return None

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    async def create_users(self) -> None:
        for i in range(0, len(self.users), 500):
            r = await self.request("POST", "/hub/api/users", "/hub/api/users",
                                   json={"usernames": self.users[i:i + 500]})
            if r is None or r.status_code not in (201, 409):
                raise RuntimeError(f"could not create the soak users: {r and r.status_code} {r and r.text}")

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.user_loop(u)) for u in self.users]
        await self.stopping.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def server_model(self, user: str) -> dict[str, Any] | None:
        """The user's default server in the API (None: no server), or {"unknown": True} on an error answer."""
        r = await self.request("GET", "/hub/api/users/{u}", f"/hub/api/users/{user}")
        if r is None or r.status_code != 200:
            return {"unknown": True}
        server: dict[str, Any] | None = r.json().get("servers", {}).get("")
        return server

    async def wait_until(self, user: str, ready: bool, timeout: float) -> float | None:
        """Seconds until the server is ready (`ready`) or gone (not `ready`), None after `timeout`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            model = await self.server_model(user)
            if ready and model is not None and model.get("ready"):
                return time.monotonic() - t0
            if not ready and model is None:
                return time.monotonic() - t0
            await asyncio.sleep(0.5)
        return None

    async def user_loop(self, user: str) -> None:
        await asyncio.sleep(random.uniform(0, 10))  # spread the first spawns
        while not self.stopping.is_set():
            await self.one_cycle(user)
            await asyncio.sleep(random.uniform(1, 8))

    async def one_cycle(self, user: str) -> None:
        c = self.stats.counts
        t0 = time.monotonic()
        r = await self.request("POST", "/hub/api/users/{u}/server", f"/hub/api/users/{user}/server")
        if r is None or r.status_code >= 500:
            await asyncio.sleep(2)
            return
        if r.status_code in (201, 202):
            c["spawn requests accepted"] += 1
        elif r.status_code == 400:
            c["spawn refused 400 (already pending or running)"] += 1
        waited = await self.wait_until(user, True, 90)
        if waited is None:
            c["spawns not ready within 90 s"] += 1
            self.stats.errors.append({"t": self.elapsed(), "endpoint": "spawn", "status": None,
                                      "body": f"{user}: not ready 90 s after POST"})
        else:
            c["spawns ready"] += 1
            self.stats.ready_seconds.append(time.monotonic() - t0)
            await self.check_reachable(user)
        hold = random.uniform(*self.hold)
        if random.random() < self.busy_share:
            await self.busy(user, hold)
        else:
            c["holds idle"] += 1
            await asyncio.sleep(hold)
        model = await self.server_model(user)
        if model is None:
            c["servers gone before our stop (culled)"] += 1
            return
        t1 = time.monotonic()
        r = await self.request("DELETE", "/hub/api/users/{u}/server", f"/hub/api/users/{user}/server")
        if r is not None and r.status_code in (202, 204):
            c["stop requests accepted"] += 1
        gone = await self.wait_until(user, False, 60)
        if gone is None:
            c["stops not done within 60 s"] += 1
            self.stats.errors.append({"t": self.elapsed(), "endpoint": "stop", "status": None,
                                      "body": f"{user}: still there 60 s after DELETE"})
        else:
            c["stops done"] += 1
            self.stats.stop_seconds.append(time.monotonic() - t1)

    async def check_reachable(self, user: str) -> None:
        """A server the API calls ready should answer through every node (the issue's "ready means reachable")."""
        for base in self.bases:
            try:
                r = await self.client.get(f"{base}/user/{user}/soak", follow_redirects=False)
            except httpx.TransportError:
                self.stats.counts["reachability check: node down"] += 1
                continue
            self.stats.counts[f"GET /user/{{u}}/ right after ready → {r.status_code}"] += 1

    async def busy(self, user: str, hold: float) -> None:
        """Hold a websocket to the server through a node, echoing every 2 s; reopen it (other node) if it drops."""
        c = self.stats.counts
        c["holds busy (websocket)"] += 1
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            base = random.choice(self.bases).replace("http://", "ws://")
            try:
                async with connect(f"{base}/user/{user}/ws", proxy=None, open_timeout=10, ping_interval=None,
                                   close_timeout=2) as ws:
                    c["websockets opened"] += 1
                    while time.monotonic() < deadline:
                        await ws.send(b"soak")
                        async with asyncio.timeout(10):
                            if await ws.recv() != b"soak":
                                c["websocket bad echo"] += 1
                        c["websocket echoes"] += 1
                        await asyncio.sleep(2)
                    c["websockets closed by us"] += 1
                    return
            except ConnectionClosed:
                c["websockets dropped (node or server gone)"] += 1
            except InvalidStatus as exc:
                c[f"websocket refused {exc.response.status_code}"] += 1
                if await self.server_model(user) is None:
                    c["servers culled while a websocket was held"] += 1
                    return
            except (InvalidHandshake, OSError, TimeoutError) as exc:
                c[f"websocket failed ({type(exc).__name__})"] += 1
            await asyncio.sleep(1)
