"""Proxy nodes as real processes (`python -m fleethub run proxy`) against real NATS, with test upstreams."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleethub.shared.bus import Bus
from fleethub.shared.events import ActivityReported, Envelope, Message, RegistryEntry, Route, subject_filter
from fleethub.shared.names import route_key, server_prefix
from fleethub.shared.net import free_port
from fleethub.shared.settings import ServiceSettings, load_settings
from tests.integration.proxy.backend import Backend
from tests.support.cluster import Cluster, wait_for


@dataclass
class ProxyEnv:
    """A namespace on the test NATS, its bus, proxy nodes and upstreams; everything is stopped after the test."""

    settings: ServiceSettings
    bus: Bus
    cluster: Cluster
    backends: list[Backend] = field(default_factory=list)

    def node(self, port: int | None = None, **proxy: Any) -> tuple[subprocess.Popen[bytes], str]:
        """Start a proxy node; returns the process and its base URL."""
        port = port or free_port()
        proc = self.cluster.start("proxy", proxy={"port": port, **proxy})
        return proc, f"http://127.0.0.1:{port}"

    async def backend(self, name: str) -> Backend:
        b = await Backend(name).start()
        self.backends.append(b)
        return b

    async def route(self, user: str, target: str, server: str = "") -> None:
        route = Route(routespec=server_prefix(user, server), target=target, data={"user": user, "server_name": server})
        await self.bus.routes.put(route_key(user, server), route)

    async def unroute(self, user: str, server: str = "") -> None:
        await self.bus.routes.delete(route_key(user, server))

    async def watch_activity(self) -> tuple[Any, list[ActivityReported]]:
        """Collect every activity batch published from now on; returns the subscription (to unsubscribe)
        and the list the batches are appended to."""
        batches: list[ActivityReported] = []

        async def on_event(envelope: Envelope, message: Message) -> None:
            if isinstance(message, ActivityReported):
                batches.append(message)

        sub = await self.bus.subscribe_events(subject_filter(ActivityReported, self.settings.nats_namespace), on_event)
        return sub, batches

    async def replica(self, service: str, name: str, url: str) -> None:
        await self.bus.registry.put(RegistryEntry(service=service, replica=name, url=url))

    async def unregister(self, service: str, name: str) -> None:
        await self.bus.registry.delete(service, name)


@pytest.fixture
async def env(tmp_path: Path, nats_url: str, nats_namespace: str) -> AsyncIterator[ProxyEnv]:
    settings = load_settings(
        None, nats_url=nats_url, nats_namespace=nats_namespace,
        # the raw-client tests name these hosts; a node refuses any Host it does not answer as
        proxy={"activity_interval": 0.3, "upstream_timeout": 2.0,
               "allowed_hosts": ["hub.example", "hub.example:8443", "hub.example.org", "x", "h"]},
    )
    bus = Bus(nats_url, nats_namespace, "proxy-test")
    await bus.connect()
    await bus.ensure_topology()
    logs = tmp_path / "logs"
    logs.mkdir()
    e = ProxyEnv(settings, bus, Cluster(settings, logs))
    try:
        yield e
    finally:
        e.cluster.stop()
        for b in e.backends:
            await b.stop()
        await bus.close()


async def get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.get(url, follow_redirects=False, **kw)


async def answers(url: str, backend: str) -> bool:
    r = await get(url)
    return r.status_code == 200 and r.headers.get("x-backend") == backend


async def node_ready(env: ProxyEnv, base: str) -> None:
    """Wait until a node answers at all (any status)."""
    async def up() -> bool:
        return (await get(f"{base}/")).status_code == 302

    await wait_for(up, timeout=20, interval=0.02, what=f"proxy node at {base}\n{env.cluster.logs()}")


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))
