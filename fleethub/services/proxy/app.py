"""The proxy node process: bus, watches, the listening socket, activity batches, housekeeping.

Start order: sockets bound → bus → topology → watches → listening once the route table is loaded
(or after `LOAD_WAIT`; 503 for user routes until then). Shutdown is the reverse: stop accepting, close idle
connections, let requests in flight finish within `SHUTDOWN_GRACE`, publish the last activity batch, close the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable
from typing import Any

from fleethub.services.proxy.announce import announce_leaving, announce_loop
from fleethub.services.proxy.hosts import allowed_hosts
from fleethub.services.proxy.node import Node
from fleethub.services.proxy.routeapi import ApiConnection, RouteApi
from fleethub.services.proxy.server import ClientConnection
from fleethub.services.proxy.tls import HANDSHAKE_TIMEOUT, RedirectConnection, https_origin, server_context
from fleethub.services.proxy.upstream import Pool
from fleethub.services.proxy.watch import Watcher
from fleethub.shared.bus import Bus, replica_info
from fleethub.shared.bus.applied import HEARTBEAT
from fleethub.shared.errors import BusError, ConfigError
from fleethub.shared.events import ActivityReported, subject_filter
from fleethub.shared.faults import fault
from fleethub.shared.logging import bind_service
from fleethub.shared.metrics import Metrics
from fleethub.shared.ops import Readiness, ops_listener
from fleethub.shared.service import HOSTING, bind_socket, bus_credentials, exit_on_hub_shutdown, replica_id, run_async
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)

SWEEP_EVERY = 1.0
IDLE_SWEEP_EVERY = 30.0  # seconds between sweeps while the node has no connection at all
SHUTDOWN_GRACE = 5.0
CONNECT_TIMEOUT = 5.0
LOAD_WAIT = 10.0  # a node with no route table after this long listens anyway (503 for user routes)
BACKLOG = 4096
WORKER_ENV = "FLEETHUB_PROXY_SUPERVISOR"  # set by the supervisor in its workers' environment: its pid
WORKER_INDEX_ENV = "FLEETHUB_PROXY_WORKER"  # and the worker's index (its operations port is ops port + index)


async def _sweep_loop(node: Node, bus: Bus) -> None:
    loop = asyncio.get_running_loop()
    while True:
        if node.idle:  # nothing to close: wait for a client (the replicas' expiry waits as long, unseen)
            await node.arrived.wait(IDLE_SWEEP_EVERY)
        else:
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
    # polled: close_idle() must run again each time a busy connection turns idle, which fires no event
    while node.close_idle() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    node.abort_all()


def trust_checker(networks: list[str]) -> Callable[[str], bool]:
    """Whether a client address belongs to `proxy.trusted_proxies` (its X-Forwarded-* are believed)."""
    nets = [ipaddress.ip_network(n, strict=False) for n in networks]
    if not nets:
        return lambda ip: False

    def trusted(ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in nets)

    return trusted


def hsts_line(settings: ServiceSettings) -> bytes:
    """The Strict-Transport-Security header line of the hub's own responses (https public URL), or b""."""
    max_age = settings.proxy.hsts_max_age
    if not max_age or not settings.hub_public_url.lower().startswith("https://"):
        return b""
    return b"Strict-Transport-Security: max-age=%d\r\n" % max_age


def api_token(settings: ServiceSettings) -> str:
    """The route API's token: `proxy.auth_token`, else $CONFIGPROXY_AUTH_TOKEN (as CHP reads it).

    Raises:
        ConfigError: the API is enabled without a token (an open route API would let anyone
            redirect any user's traffic).
    """
    configured = settings.proxy.auth_token
    token = configured.get_secret_value() if configured is not None else os.environ.get("CONFIGPROXY_AUTH_TOKEN", "")
    if not token:
        raise ConfigError(
            "proxy.api_port is set but no token is: set proxy.auth_token (FLEETHUB_PROXY__AUTH_TOKEN) "
            "or CONFIGPROXY_AUTH_TOKEN"
        )
    return token


async def _parent_watch(parent: int, stop: asyncio.Event) -> None:
    """A worker whose supervisor died stops too (it would otherwise serve on, unsupervised)."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.error("proxy supervisor %d is gone; this worker stops", parent)
            stop.set()
            return
        await asyncio.sleep(0.5)


def _observability(node: Node, node_id: str, bus: Bus, loaded: asyncio.Event) -> tuple[Metrics, Readiness]:
    """The node's metrics (its request and byte counts read from `node` when scraped) and readiness: the
    bus connected and the route table loaded (a proxy node uses no database)."""
    metrics = Metrics("proxy")
    if metrics.proxy_collector is not None:
        metrics.proxy_collector.read = lambda: (node_id, node.requests, node.bytes_in, node.bytes_out)
    readiness = Readiness()

    async def connected() -> bool:
        return bus.healthy.is_set()

    readiness.add("bus", connected)
    readiness.add_event("route_table", loaded)
    return metrics, readiness


async def main(settings: ServiceSettings, stop: asyncio.Event, *, reuse_port: bool = False,
               supervisor: int | None = None, worker: int = 0) -> None:
    """Run one proxy node (or one worker of a node) until `stop` is set.

    The listening sockets are bound at once but listen only once the route table is loaded (or
    after `LOAD_WAIT` without NATS), so a new or restarted worker gets no connection it would have to
    answer with a 503.
    """
    node_id = replica_id("proxy")
    bind_service("proxy", node_id)
    conf = settings.proxy
    sock = bind_socket(conf.host, conf.port, listen=False, reuse_port=reuse_port)
    api_sock = None
    token = ""
    if conf.api_port is not None:
        token = api_token(settings)
        api_sock = bind_socket(conf.api_host, conf.api_port, listen=False, reuse_port=reuse_port)
    ssl_ctx = server_context(conf.ssl_cert, conf.ssl_key) if conf.ssl_cert and conf.ssl_key else None
    redirect_sock = None
    if conf.http_redirect_port is not None:
        redirect_sock = bind_socket(conf.host, conf.http_redirect_port, listen=False, reuse_port=reuse_port)
    unused = [s for s in (sock, api_sock, redirect_sock) if s is not None]  # closed here unless a server took them
    host, port = sock.getsockname()[:2]
    timeout = conf.upstream_timeout
    node = Node(port=port, upstream_timeout=timeout, pool=Pool(connect_timeout=min(CONNECT_TIMEOUT, timeout)),
                trusted=trust_checker(conf.trusted_proxies),
                hosts=allowed_hosts(settings, conf.host, port, tls=ssl_ctx is not None),
                scheme=b"https" if ssl_ctx is not None else b"http", hsts=hsts_line(settings),
                base_url=settings.base_url)
    bus = Bus(settings.nats_url, settings.nats_namespace, node_id, bus_credentials(settings, "proxy"),
              replicas=settings.nats_replicas)
    bus.connection.exit_on_close = True  # a process: closed for good, it stops and its supervisor restarts it
    hosted = HOSTING.get()
    if hosted:
        hosted.pace(bus)
    await bus.connect(timeout=30)
    await bus.answer_pings(replica_info("proxy", node_id))  # `fleethub status` lists this node
    tasks: list[asyncio.Task[None]] = []
    announcing: asyncio.Task[None] | None = None
    servers: list[asyncio.Server] = []
    activity_sub = None
    stack = contextlib.AsyncExitStack()
    try:
        try:  # the api declares the streams and buckets; the watch waits for them on its own
            await bus.ensure_topology(timeout=10)
        except BusError as exc:
            log.warning("streams and buckets not there yet (%s); starting anyway", str(exc)[:300])
        await exit_on_hub_shutdown(bus, settings.nats_namespace, proxy=True)
        watcher = Watcher(bus, node)
        metrics, readiness = _observability(node, node_id, bus, watcher.loaded)
        ops = await stack.enter_async_context(ops_listener(settings.ops.proxy, metrics, readiness, worker))
        if ops is not None:
            log.info("proxy node %s: operations listener on port %d", node_id, ops)
        tasks = [
            _background(metrics.watch_event_loop(), "event-loop-watch"),
            _background(watcher.run(), "watch"),
            _background(node.activity.flush_loop(bus, node_id, conf.activity_interval), "activity"),
            _background(_sweep_loop(node, bus), "sweep"),
        ]
        if supervisor is not None:
            tasks.append(_background(_parent_watch(supervisor, stop), "parent"))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher.loaded.wait(), LOAD_WAIT)
        fault("proxy.after_snapshot_before_serve")
        handshake = HANDSHAKE_TIMEOUT if ssl_ctx is not None else None
        servers.append(await loop.create_server(lambda: ClientConnection(node), sock=sock, backlog=BACKLOG,
                                                ssl=ssl_ctx, ssl_handshake_timeout=handshake))
        unused.remove(sock)
        shown = f"[{host}]" if ":" in host else host
        log.info("proxy node %s listening on %s://%s:%s", node_id, node.scheme.decode(), shown, port)
        # serving now: spawners wait for this node's acknowledgements from here on
        every = hosted.route_heartbeat if hosted else HEARTBEAT
        announcing = _background(announce_loop(node, bus, node_id, every), "announce")
        tasks.append(announcing)
        if redirect_sock is not None:
            origin = https_origin(settings.hub_public_url)
            servers.append(await loop.create_server(lambda: RedirectConnection(origin), sock=redirect_sock,
                                                    backlog=BACKLOG))
            unused.remove(redirect_sock)
            log.info("plain-HTTP port %s redirects to %s", redirect_sock.getsockname()[1], origin.decode())
        if api_sock is not None:
            activity_sub = await _follow_activity(bus, node)
            api = RouteApi(node, bus, token)
            servers.append(await loop.create_server(lambda: ApiConnection(api), sock=api_sock, backlog=BACKLOG))
            unused.remove(api_sock)
            log.info("route API (configurable-http-proxy compatible) on http://%s:%s", *api_sock.getsockname()[:2])
        await stop.wait()
        log.info("proxy node %s stopping", node_id)
    finally:
        for server in servers:
            server.close()
        for s in unused:
            s.close()
        if announcing is not None:  # no longer taking connections: spawners stop waiting for this node
            announcing.cancel()
            await asyncio.gather(announcing, return_exceptions=True)
            await announce_leaving(node, bus, node_id)
        await _drain(node)
        if activity_sub is not None:
            with contextlib.suppress(Exception):
                await activity_sub.unsubscribe()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await node.activity.flush(bus, node_id)
        node.pool.close()
        await stack.aclose()
        await bus.close()


async def _follow_activity(bus: Bus, node: Node) -> Any:
    """Keep every node's activity batches in `node.seen`, for the route API's `last_activity`."""

    async def on_event(envelope: Any, message: Any) -> None:
        if isinstance(message, ActivityReported):
            for route in message.routes:
                node.saw(route.key, route.last_activity.timestamp())

    return await bus.subscribe_events(subject_filter(ActivityReported, bus.names.namespace), on_event)


def run(settings: ServiceSettings) -> None:
    """Run one proxy node until SIGINT/SIGTERM (`fleethub run proxy`).

    With `proxy.workers` > 1 this process supervises that many worker processes sharing the port;
    a worker (started by a supervisor) is told so by `WORKER_ENV`.
    """
    supervisor = os.environ.get(WORKER_ENV)
    if supervisor is not None:
        worker = int(os.environ.get(WORKER_INDEX_ENV, "0"))
        run_async(lambda stop: main(settings, stop, reuse_port=True, supervisor=int(supervisor), worker=worker))
    elif settings.proxy.workers > 1:
        from fleethub.services.proxy.workers import supervise

        supervise(settings)
    else:
        run_async(lambda stop: main(settings, stop))


async def serve(settings: ServiceSettings, stop: asyncio.Event) -> None:
    """One proxy node in the running loop until `stop` is set (hosted beside other services by `fleethub up`;
    `proxy.workers` > 1 needs processes of their own: `fleethub up --processes`)."""
    await main(settings, stop)
