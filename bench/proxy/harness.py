"""The benchmark's harness: the processes it starts (backends, CHP, fleethub nodes on an embedded NATS), their
cleanup, and where figures and failed measurements are kept; the figure mixins build on it."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import loadgen
from chp import BINARY
from common import HERE, HOST, ROOT, START_TIMEOUT, Plan, Proxy, get_once, say
from proctree import BenchError, Proc
from wire import RouteApi, WireError

from fleethub.shared.net import free_port

NAMESPACE = "bench"


class Harness:
    """The state of one run; every process it starts is stopped by `cleanup`."""

    def __init__(self, plan: Plan, workdir: Path, *, chp_version: str) -> None:
        self.plan = plan
        self.chp_version = chp_version
        self.workdir = workdir
        self.token = secrets.token_hex(16)
        self.procs: list[Proc] = []
        self.nats: Any = None
        self.results: dict[str, Any] = {"plan": dict(plan.__dict__)}
        self.errors: list[str] = []
        self.backend_a: Proxy | None = None
        self.backend_b: Proxy | None = None
        self.dead_port = 0
        self.chp: Proxy | None = None
        self.fh: Proxy | None = None  # the main fleethub node (2 workers, with the route API)
        self.fh1: Proxy | None = None  # a second node, 1 worker
        self.fh_nodes = 0
        self.turn = 0  # alternates the order of CHP and fleethub

    # ---- processes

    def proc(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, args, self.workdir / f"{name}.log", env=env, cwd=ROOT)
        self.procs.append(p)
        return p.start()

    def cleanup(self) -> None:
        loadgen.stop_all()
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as exc:  # keep stopping the others
                say(f"  ! stopping {p.name}: {exc!r}")
        self.procs.clear()
        if self.nats is not None:
            try:
                self.nats.stop()
            except Exception as exc:
                say(f"  ! stopping nats-server: {exc!r}")
            self.nats = None

    def stop_proc(self, p: Proc) -> None:
        p.stop()
        if p in self.procs:
            self.procs.remove(p)

    async def wait_for(self, proc: Proc, what: str, check: Callable[[], Awaitable[bool]],
                       timeout: float = START_TIMEOUT, every: float = 0.02) -> float:
        """Poll `check` until true; seconds since `proc` was started. Fails naming `proc` if it dies or times out."""
        deadline = time.perf_counter() + timeout
        while True:
            if not proc.alive():
                raise proc.failure(f"exited before it {what}")
            try:
                async with asyncio.timeout(5):
                    if await check():
                        return time.perf_counter() - proc.started
            except (OSError, WireError, TimeoutError, ValueError):
                pass
            if time.perf_counter() > deadline:
                raise proc.failure(f"did not {what} within {timeout:.0f} s")
            await asyncio.sleep(every)

    async def start_backend(self, name: str) -> Proxy:
        port_file = self.workdir / f"backend-{name}.port"
        p = self.proc(f"backend-{name}", [sys.executable, str(HERE / "backend.py"), "--name", name,
                                          "--port-file", str(port_file)])

        async def bound() -> bool:
            return port_file.exists()

        await self.wait_for(p, "listened", bound, timeout=20)
        port = int(port_file.read_text())
        backend = Proxy(f"backend-{name}", f"backend {name}", p, port)
        r = await get_once(port, "/user/x/1k")
        if r.status != 200 or r.headers.get("x-backend") != name or len(r.body) != 1024:
            raise BenchError(f"backend {name} answered wrongly: {r.status} {r.headers}")
        return backend

    async def start_chp(self) -> Proxy:
        port, api_port = free_port(), free_port()
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": self.token}
        p = self.proc("chp", [str(BINARY), "--ip", HOST, "--port", str(port), "--api-ip", HOST,
                              "--api-port", str(api_port), "--log-level", "warn"], env)
        api = RouteApi(HOST, api_port, self.token)

        async def ready() -> bool:
            await api.routes()
            return (await get_once(port, "/_chp_healthz")).status == 200

        t = await self.wait_for(p, "answered on its API and port", ready)
        api.close()
        self.results["chp_start_s"] = t
        return Proxy("chp", "CHP", p, port, api)

    def fleethub_env(self, port: int, workers: int, api_port: int | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETHUB_", "CONFIGPROXY_"))}
        env.update(
            FLEETHUB_NATS_URL=self.nats.url, FLEETHUB_NATS_NAMESPACE=NAMESPACE, FLEETHUB_PROXY__HOST=HOST,
            FLEETHUB_PROXY__PORT=str(port), FLEETHUB_PROXY__WORKERS=str(workers), CONFIGPROXY_AUTH_TOKEN=self.token,
            FLEETHUB_LOG_LEVEL="WARNING", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        if api_port is not None:
            env["FLEETHUB_PROXY__API_PORT"] = str(api_port)
        return env

    def spawn_fleethub(self, workers: int, with_api: bool) -> tuple[Proxy, int | None]:
        self.fh_nodes += 1
        port = free_port()
        api_port = free_port() if with_api else None
        name = f"fleethub-node{self.fh_nodes}"
        p = self.proc(name, [sys.executable, "-m", "fleethub", "run", "proxy"],
                      self.fleethub_env(port, workers, api_port))
        api = RouteApi(HOST, api_port, self.token) if api_port is not None else None
        label = f"fleethub node {self.fh_nodes} ({workers} worker{'s' if workers > 1 else ''})"
        return Proxy(f"fh-node{self.fh_nodes}", label, p, port, api, workers), api_port

    async def start_fleethub(self, workers: int, with_api: bool, check_path: str | None = None,
                             expect: str = "A") -> Proxy:
        """Start a node and wait until its health check answers 200 (and `check_path` routes to `expect`)."""
        node, _ = self.spawn_fleethub(workers, with_api)

        async def ready() -> bool:
            if (await get_once(node.port, "/_chp_healthz")).status != 200:
                return False
            if node.api is not None:
                await node.api.routes()
            if check_path is not None:
                return (await get_once(node.port, check_path)).headers.get("x-backend") == expect
            return True

        t = await self.wait_for(node.proc, "answered 200 on /_chp_healthz", ready)
        if node.api is not None:
            node.api.close()
        node.ready_s = t
        return node

    # ---- bookkeeping

    def order(self) -> list[Proxy]:
        """CHP and the main fleethub node, in alternating order."""
        self.turn += 1
        pair = [p for p in (self.chp, self.fh) if p is not None]
        return pair if self.turn % 2 else pair[::-1]

    def put(self, section: str, key: str, value: Any) -> None:
        self.results.setdefault(section, {})[key] = value

    async def attempt(self, what: str, coro: Awaitable[Any]) -> Any:
        """Run one measurement; a failure is recorded and the benchmark goes on."""
        try:
            return await coro
        except Exception as exc:  # any failure of one measurement is reported, the rest goes on
            msg = f"{what}: {type(exc).__name__}: {exc}"
            self.errors.append(msg)
            say(f"  ! {msg}")
            return None
