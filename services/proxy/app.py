"""The proxy node process: bus, watches, the listening socket, activity batches, housekeeping.

Start order: bus → topology → watches → listener (answering 503 for user routes until the route
table is loaded). Shutdown is the reverse: stop accepting, close idle connections, let requests in
flight finish within `SHUTDOWN_GRACE`, publish the last activity batch, close the bus.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.bus import Bus
from shared.service import bind_socket, replica_id, run_async
from shared.settings import ServiceSettings

from services.proxy.node import Node
from services.proxy.server import ClientConnection
from services.proxy.upstream import Pool
from services.proxy.watch import Watcher

log = logging.getLogger(__name__)

SWEEP_EVERY = 1.0
SHUTDOWN_GRACE = 5.0
CONNECT_TIMEOUT = 5.0


async def _sweep_loop(node: Node, bus: Bus) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SWEEP_EVERY)
        node.sweep(loop.time(), nats_up=bus.healthy.is_set())


def _background(coro: Any, name: str) -> asyncio.Task[None]:
    task: asyncio.Task[None] = asyncio.create_task(coro, name=name)

    def done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("proxy task %s died: %r", name, t.exception())

    task.add_done_callback(done)
    return task


async def _drain(node: Node) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_GRACE
    while node.close_idle() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    node.abort_all()


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    """Run one proxy node until `stop` is set."""
    node_id = replica_id("proxy")
    sock = bind_socket(settings.proxy.host, settings.proxy.port)
    host, port = sock.getsockname()[:2]
    timeout = settings.proxy.upstream_timeout
    node = Node(port=port, upstream_timeout=timeout, pool=Pool(connect_timeout=min(CONNECT_TIMEOUT, timeout)))
    bus = Bus(settings.nats_url, settings.nats_namespace, node_id)
    await bus.connect(timeout=30)
    tasks: list[asyncio.Task[None]] = []
    server: asyncio.Server | None = None
    try:
        await bus.ensure_topology()
        watcher = Watcher(bus, node)
        tasks = [
            _background(watcher.run(), "watch"),
            _background(node.activity.flush_loop(bus, node_id, settings.proxy.activity_interval), "activity"),
            _background(_sweep_loop(node, bus), "sweep"),
        ]
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: ClientConnection(node), sock=sock)
        shown = f"[{host}]" if ":" in host else host
        log.info("proxy node %s listening on http://%s:%s", node_id, shown, port)
        await stop.wait()
        log.info("proxy node %s stopping", node_id)
    finally:
        if server is not None:
            server.close()
        await _drain(node)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await node.activity.flush(bus, node_id)
        node.pool.close()
        await bus.close()


def run(settings: ServiceSettings) -> None:
    """Run one proxy node until SIGINT/SIGTERM (`fleethub run proxy`)."""
    run_async(lambda stop: main(settings, stop))
