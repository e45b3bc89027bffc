"""The fault suite's stack: the plan's standard shape as real processes, each one a handle a test can
kill, stop, continue or restart, plus an admin client, the event log and the oracle.

Usage (see tests/faults/conftest.py for the `stack` fixture)::

    async with fault_stack(tmp_path, nats_url, database_url, nats_namespace) as stack:
        stack["spawner-0"].kill()                        # SIGKILL (kill -9), waits until it is gone
        stack["proxy-1"].stop(); stack["proxy-1"].cont() # SIGSTOP / SIGCONT: a hung process
        stack["api-0"].restart()                         # same settings and ports, a new process
        crashy = stack.start("api", extra_env={"FLEETHUB_FAULT": "api.after_commit_before_publish:kill"})
        via_relay = stack.start("spawner", nats_url=relay.url_for(stack.settings.nats_url))
        await stack.create_users("alice")
        r = await stack.start_server("alice")            # POST through proxy-0 (node=1: proxy-1)
        await stack.wait_ready("alice")
        stack.events.count("server.ready", spawn_id=...) # every server event of the namespace
        await stack.oracle.converged()                   # the §6.1 invariants, or an AssertionError

The shape: auth, 2 api replicas, 2 spawner workers (FAKE_SERVER as the user server, lease_ttl 2 s so
adoption happens within seconds), 2 proxy nodes each on its own public port and route-API port (the
oracle reads their tables there), and the culler if `culler=True`. Handles are named `<service>-<n>`
(`api-0`, `api-1`, `spawner-0`, …, `auth-0`, `culler-0`), in start order. `sections` override the
settings of every replica (merged into the defaults below, section by section).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.shared.db.engine import make_engine
from fleethub.shared.names import server_prefix
from fleethub.shared.net import free_port
from fleethub.shared.settings import FAULT_VAR, ServiceSettings
from tests.support.cluster import FAKE_SERVER, Cluster, ensure_user, mint_token, running_stack, wait_for
from tests.support.eventlog import EventLog
from tests.support.oracle import Oracle, ProxyNode

T = 10.0  # seconds: the convergence deadline of the plan (§6.1)
WAIT = 30.0  # seconds a step a test waits for (ready, stopped) may take on a loaded machine: not a goal
ADMIN = "fault-admin"


@dataclass
class Proc:
    """One service process of the stack, by name (`spawner-0`); `restart()` replaces `popen`."""

    name: str
    service: str
    cluster: Cluster
    overrides: dict[str, Any]
    extra_env: dict[str, str]
    popen: subprocess.Popen[bytes]
    restarts: int = 0

    @property
    def pid(self) -> int:
        """The current process's pid."""
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """Whether the current process has not exited (a stopped process is alive)."""
        return self.popen.poll() is None

    @property
    def settings(self) -> ServiceSettings:
        """The settings this replica runs with."""
        return self.cluster.replica_settings(**self.overrides)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL (kill -9) and wait until it is gone. Its user servers (spawner) keep running."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout)

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM (a graceful shutdown) and wait; SIGKILL after `timeout`."""
        if self.alive:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self) -> None:
        """SIGSTOP: hung, holding its sockets and leases until `cont()`."""
        self.popen.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        """SIGCONT after `stop()`."""
        self.popen.send_signal(signal.SIGCONT)

    async def wait_exit(self, timeout: float = T) -> int:
        """Wait for the process to exit (a crash point's kill, say); returns its exit code (-9: SIGKILL)."""
        await wait_for(lambda: _exited(self.popen), timeout=timeout, what=f"{self.name} to exit")
        return self.popen.returncode

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>` of an http service replica started with a fixed port
        (`stack.start("api", api={"port": free_port()})`), to send it requests directly."""
        port = getattr(self.settings, self.service).port
        if not port:
            raise ValueError(f"{self.name} chose its own port: start it with `{self.service}={{'port': …}}`")
        return f"http://127.0.0.1:{port}"

    def restart(self, *, graceful: bool = False, extra_env: dict[str, str] | None = None, **overrides: Any) -> Proc:
        """A new process with the same settings and ports: the old one is SIGKILLed first if it still runs
        (SIGTERM with `graceful`). The environment is the same minus `FLEETHUB_FAULT` (a crash point
        would fire again), unless `extra_env` replaces it; `overrides`, if given, replace the replica's
        own settings overrides from now on. Returns self."""
        if self.alive:
            self.terminate() if graceful else self.kill()
        if overrides:
            self.overrides = dict(overrides)
        if extra_env is not None:
            self.extra_env = dict(extra_env)
        else:
            self.extra_env = {k: v for k, v in self.extra_env.items() if k != FAULT_VAR}
        self.restarts += 1
        self.popen = self.cluster.start(self.service, extra_env=self.extra_env, log_name=self.name,
                                        **self.overrides)
        return self


async def _exited(popen: subprocess.Popen[bytes]) -> bool:
    return popen.poll() is not None


@dataclass
class FaultStack:
    """A running fault stack: process handles by name, clients, the event log and the oracle."""

    cluster: Cluster
    engine: AsyncEngine
    procs: dict[str, Proc] = field(default_factory=dict)
    proxy_nodes: list[ProxyNode] = field(default_factory=list)
    admin_token: str = ""
    events: EventLog = field(default=None)  # type: ignore[assignment]  # set once the api is up
    oracle: Oracle = field(default=None)  # type: ignore[assignment]

    @property
    def settings(self) -> ServiceSettings:
        """The settings every replica shares (before its own overrides)."""
        return self.cluster.settings

    def __getitem__(self, name: str) -> Proc:
        return self.procs[name]

    def named(self, service: str) -> list[Proc]:
        """The handles of one service, in start order."""
        return [p for p in self.procs.values() if p.service == service]

    def start(self, service: str, *, name: str | None = None, extra_env: dict[str, str] | None = None,
              **overrides: Any) -> Proc:
        """Start one more replica of `service` (named `<service>-<n>` unless `name`); `overrides` replace
        settings for it alone (`nats_url=relay.url_for(...)`, `spawner={"lease_ttl": 5}`), `extra_env`
        is added to its environment (`{"FLEETHUB_FAULT": "point:kill"}`)."""
        name = name or f"{service}-{len(self.named(service))}"
        if name in self.procs:
            raise ValueError(f"a process named {name} exists already")
        popen = self.cluster.start(service, extra_env=extra_env, log_name=name, **overrides)
        proc = Proc(name, service, self.cluster, dict(overrides), dict(extra_env or {}), popen)
        self.procs[name] = proc
        return proc

    def start_proxy(self, *, name: str | None = None, extra_env: dict[str, str] | None = None) -> Proc:
        """Start one more proxy node on ports of its own; the oracle checks its table too."""
        port, api_port = free_port(), free_port()
        proc = self.start("proxy", name=name, extra_env=extra_env, proxy={"port": port, "api_port": api_port})
        self.proxy_nodes.append(ProxyNode(proc.name, port, api_port, alive=lambda: proc.alive))
        return proc

    def proxy_url(self, node: int = 0) -> str:
        """Public base URL of proxy node `node`."""
        return f"http://127.0.0.1:{self.proxy_nodes[node].port}"

    def logs(self) -> str:
        """Every process's log (their tails), for failure messages."""
        return self.cluster.logs()

    async def wait_up(self, timeout: float = 60.0) -> None:
        """Wait until the hub answers through every proxy node, then mint the admin token and open the events."""
        started = time.monotonic()
        # the token needs only the database: minted (a CLI process) while the services come up
        await ensure_user(self.settings, ADMIN, admin=True)
        token = asyncio.create_task(asyncio.to_thread(mint_token, self.settings, ADMIN))
        try:
            await self.cluster.wait_hub(timeout)
            for node in range(1, len(self.proxy_nodes)):
                async def up(n: int = node) -> bool:
                    async with httpx.AsyncClient(timeout=5) as anon:
                        return (await anon.get(f"{self.proxy_url(n)}/hub/api/")).status_code == 200
                await wait_for(up, timeout=max(5.0, timeout - (time.monotonic() - started)),
                               what=f"the hub through proxy node {node}")
        except AssertionError:
            await asyncio.gather(token, return_exceptions=True)
            raise AssertionError(f"the fault stack did not come up\n{self.logs()}") from None
        self.admin_token = await token
        self.events = await EventLog.open(self.settings.nats_url, self.settings.nats_namespace)
        self.oracle.events = self.events

    # --- clients ---------------------------------------------------------------------------------

    def client(self, node: int = 0, *, token: str | None = None, timeout: float = 30.0,
               via: Proc | None = None) -> httpx.AsyncClient:
        """An HTTP client of the hub API through proxy node `node` (base URL `…/hub/api`), or straight to the
        replica `via` (started with a port of its own), as the admin unless `token`; the caller closes it."""
        base = via.base_url if via is not None else self.proxy_url(node)
        return httpx.AsyncClient(base_url=f"{base}/hub/api", timeout=timeout,
                                 headers={"Authorization": f"token {token or self.admin_token}"})

    async def create_users(self, *names: str, node: int = 0) -> None:
        """Create users through the API (POST /users)."""
        async with self.client(node) as api:
            r = await api.post("/users", json={"usernames": list(names)})
            assert r.status_code in (201, 409), r.text

    async def start_server(self, user: str, server_name: str = "", *, node: int = 0, via: Proc | None = None,
                           timeout: float = 30.0, **body: Any) -> httpx.Response:
        """POST /users/<user>/server[s/<name>] through proxy node `node` (or straight to `via`); the response
        as it came (httpx.HTTPError if the connection broke)."""
        async with self.client(node, timeout=timeout, via=via) as api:
            return await api.post(_server_path(user, server_name), json=body or None)

    async def stop_server(self, user: str, server_name: str = "", *, node: int = 0, via: Proc | None = None,
                          timeout: float = 30.0) -> httpx.Response:
        """DELETE /users/<user>/server[s/<name>] through proxy node `node` (or straight to `via`)."""
        async with self.client(node, timeout=timeout, via=via) as api:
            return await api.delete(_server_path(user, server_name))

    async def server_model(self, user: str, server_name: str = "", *, node: int = 0) -> dict[str, Any] | None:
        """The server's model in GET /users/<user> (None: the user has no such server).

        Raises:
            httpx.HTTPStatusError: a 5xx (no api replica answering), which `wait_for` retries.
        """
        async with self.client(node) as api:
            r = await api.get(f"/users/{user}")
            if r.status_code >= 500:  # no replica answering (yet): wait_for tries again
                r.raise_for_status()
            assert r.status_code == 200, r.text
            model: dict[str, Any] | None = r.json()["servers"].get(server_name)
            return model

    async def wait_ready(self, user: str, server_name: str = "", *, timeout: float = WAIT) -> dict[str, Any]:
        """Wait until the API shows the server ready; returns its model."""
        async def ready() -> dict[str, Any] | None:
            model = await self.server_model(user, server_name)
            return model if model and model.get("ready") else None
        result: dict[str, Any] = await wait_for(ready, timeout=timeout, interval=0.1,
                                                what=f"{user}/{server_name} ready in the API")
        return result

    async def wait_stopped(self, user: str, server_name: str = "", *, timeout: float = WAIT) -> None:
        """Wait until the API shows no active server (stopped, or gone)."""
        async def stopped() -> bool:
            model = await self.server_model(user, server_name)
            return model is None or (not model.get("ready") and not model.get("pending"))
        await wait_for(stopped, timeout=timeout, interval=0.1, what=f"{user}/{server_name} stopped in the API")

    async def server_state(self, user: str, server_name: str = "") -> dict[str, Any] | None:
        """The `server_states` row of that server (the spawner's actual state), as a dict, or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(text("SELECT * FROM server_states WHERE user_name = :u AND server_name = :s"),
                                      {"u": user, "s": server_name})).mappings().first()
        return dict(row) if row else None

    async def wait_api(self, proc: Proc, timeout: float = 60.0) -> None:
        """Wait until the api replica `proc` (started with a port of its own) answers `/hub/api/`."""
        async def up() -> bool:
            async with httpx.AsyncClient(timeout=5) as anon:
                return (await anon.get(f"{proc.base_url}/hub/api/")).status_code == 200
        await wait_for(up, timeout=timeout, what=f"{proc.name} answering")

    async def reach(self, user: str, server_name: str = "", *, node: int = 0) -> httpx.Response:
        """GET `<prefix>api` of that server through proxy node `node` (not following redirects)."""
        async with httpx.AsyncClient(timeout=10) as anon:
            return await anon.get(f"{self.proxy_url(node)}{server_prefix(user, server_name)}api")


def _server_path(user: str, server_name: str) -> str:
    return f"/users/{user}/servers/{server_name}" if server_name else f"/users/{user}/server"


def default_sections(*, culler: bool) -> dict[str, Any]:
    """The settings of the standard shape (every replica's), before a test's `sections`."""
    sections: dict[str, Any] = {
        "log_level": "INFO",
        "api": {"slow_spawn_timeout": 5, "slow_stop_timeout": 5},
        "spawner": {"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 2, "start_timeout": 10,
                    "http_timeout": 10},
        "proxy": {"port": free_port(), "api_port": free_port(), "activity_interval": 0.5,
                  "auth_token": secrets.token_hex(16)},
    }
    if culler:
        sections["culler"] = {"timeout": 4, "every": 0.5}
    return sections


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@contextlib.asynccontextmanager
async def fault_stack(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str, *,
                      apis: int = 2, spawners: int = 2, proxies: int = 2, culler: bool = False,
                      wait: bool = True, **sections: Any) -> AsyncIterator[FaultStack]:
    """The standard fault stack, up (hub answering through proxy-0, the event log subscribed) unless not
    `wait`; everything it started is stopped and reaped at exit, user servers included."""
    merged = _merge(default_sections(culler=culler), sections)
    async with running_stack(tmp_path, nats_url, database_url, nats_namespace, start=(), **merged) as cluster:
        engine = make_engine(database_url, pool_size=2)
        stack = FaultStack(cluster, engine)
        try:
            stack.start("auth")
            for _ in range(apis):
                stack.start("api")
            for _ in range(spawners):
                stack.start("spawner")
            # proxy-0 uses the shared settings' ports (the hub's public URL is proxy-0's)
            first = stack.start("proxy")
            stack.proxy_nodes.append(ProxyNode(first.name, cluster.settings.proxy.port,
                                               cluster.settings.proxy.api_port or 0, alive=lambda: first.alive))
            for _ in range(proxies - 1):
                stack.start_proxy()
            if culler:
                stack.start("culler")
            stack.oracle = Oracle(cluster.settings, engine, stack.proxy_nodes)
            if wait:
                await stack.wait_up()
            yield stack
        finally:
            if stack.events is not None:
                await stack.events.close()
            if stack.oracle is not None:
                await stack.oracle.close()
            await engine.dispose()
