"""The proxy node process: watches, the listening socket, activity batches."""

from __future__ import annotations

import asyncio
import logging
import uuid

from shared.bus import Bus
from shared.service import bind_socket, run_async
from shared.settings import ServiceSettings

from services.proxy.activity import Activity
from services.proxy.server import ProxyNode
from services.proxy.table import RouteTable
from services.proxy.upstream import Pool
from services.proxy.watch import Registry, Watcher

log = logging.getLogger(__name__)


async def _expire_loop(registry: Registry) -> None:
    while True:
        await asyncio.sleep(1.0)
        registry.expire()


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    node_id = f"proxy-{uuid.uuid4().hex[:10]}"
    sock = bind_socket(settings.proxy.host, settings.proxy.port)
    bus = Bus(settings.nats_url, settings.nats_namespace, node_id)
    await bus.connect(timeout=30)
    await bus.ensure_topology()
    table, registry, activity = RouteTable(), Registry(), Activity()
    watcher = Watcher(bus, table, registry)
    pool = Pool(connect_timeout=min(5.0, settings.proxy.upstream_timeout))
    node = ProxyNode(table, registry, activity, watcher.ready, pool, sock.getsockname()[1], settings.proxy.upstream_timeout)
    tasks = [
        asyncio.create_task(watcher.run(), name="watch"),
        asyncio.create_task(activity.flush_loop(bus, node_id, settings.proxy.activity_interval), name="activity"),
        asyncio.create_task(_expire_loop(registry), name="registry-expiry"),
    ]
    server = await asyncio.start_server(node.handle, sock=sock, limit=256 * 1024)
    log.info("proxy node %s listening on http://%s:%s", node_id, *sock.getsockname()[:2])
    try:
        await stop.wait()
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool.close()
        await bus.close()


def run(settings: ServiceSettings) -> None:
    """Run one proxy node until SIGINT/SIGTERM."""
    run_async(lambda stop: main(settings, stop))
