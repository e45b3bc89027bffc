"""What every service process shares: its runtime resources, signal handling and HTTP serving.

`open_runtime` is the body of each service's lifespan: it opens the database engine (refusing an
unmigrated schema), loads the hub secret key, connects the bus and declares the topology, and
starts the outbox relay; everything is closed in reverse order on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleethub.shared.bus import Bus, Credentials, relays_for, replica_info
from fleethub.shared.errors import ConfigError
from fleethub.shared.lifecycle import Announcer
from fleethub.shared.logging import bind_service
from fleethub.shared.metrics import Metrics
from fleethub.shared.ops import Readiness, ops_listener
from fleethub.shared.settings import ListenSettings, ServiceSettings

if TYPE_CHECKING:  # imported where used: the proxy needs none of them, and starts ~0.7 s sooner without
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from fleethub.shared.outbox import OutboxRelay

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Hosting:
    """What `fleethub up` gives the services it hosts in its own process (`HOSTING`).

    Attributes:
        engine: shared by them all but those of `engines`: one pool, where each service's own would keep its
            own idle connections open (~15 MB of PostgreSQL's memory each).
        relay_poll: seconds between the outbox relays' polls. A commit wakes the relays of its process, and
            no other process writes the hub's outbox (but a CLI command), so they poll rarely; services in
            processes of their own poll every 0.25 s for the rows of a replica that died before relaying.
        engines: services with a pool of their own (the spawner: its lease statements must answer within
            half a lease, and must never queue behind a storm of api requests for a shared connection).
        ping_interval: seconds between each NATS connection's pings (`Connection.ping_interval`).
        idle_fetch: seconds an idle durable consumer's pull waits (`Connection.idle_fetch`).
        route_heartbeat: seconds between the proxy node's repeats of its route acknowledgement (`RoutesApplied.every`).
    """

    engine: AsyncEngine
    relay_poll: float = 60.0
    ping_interval: int = 15
    idle_fetch: float = 30.0
    route_heartbeat: float = 10.0
    engines: Mapping[str, AsyncEngine] = field(default_factory=dict)

    def engine_for(self, service: str) -> AsyncEngine:
        """The engine `service` uses."""
        return self.engines.get(service, self.engine)

    def pace(self, bus: Bus) -> None:
        """Fit `bus` (before it connects) to the host: fewer idle wake-ups, as its NATS is `up`'s own child on
        loopback (a server that dies closes the socket at once) and each durable has one consumer (none hangs
        holding a pull); and a connection closed for good ends this service alone (`LOST`)."""
        bus.connection.on_lost = LOST.get()
        bus.connection.ping_interval = self.ping_interval
        bus.connection.idle_fetch = self.idle_fetch


HOSTING: contextvars.ContextVar[Hosting | None] = contextvars.ContextVar("hosting", default=None)
# set by `fleethub up` in each hosted service's context: stops that service alone (the host starts it again)
LOST: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("lost", default=None)


def replica_id(service: str) -> str:
    """A new id for one replica of `service`."""
    return f"{service}-{uuid.uuid4().hex[:10]}"


def bus_credentials(settings: ServiceSettings, identity: str) -> Credentials:
    """The NATS credentials of `identity` (a service of the permission table) from `settings`."""
    return Credentials(identity=identity, nkey_file=settings.nats_nkey_file, tls_ca_file=settings.nats_tls_ca_file,
                       tls_cert_file=settings.nats_tls_cert_file, tls_key_file=settings.nats_tls_key_file)


@dataclass
class Runtime:
    """The live resources of one service process, passed down explicitly (never global)."""

    settings: ServiceSettings
    replica: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    secret_key: str
    relay: OutboxRelay
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # sessions without a transaction (autocommit), for single-statement reads: no BEGIN/ROLLBACK round trips
    read_sessions: async_sessionmaker[AsyncSession] | None = None
    # this runtime's own metrics registry and readiness checks (`shared/metrics.py`, `shared/ops.py`)
    metrics: Metrics = field(default_factory=lambda: Metrics(""))  # open_runtime gives the service its own
    readiness: Readiness = field(default_factory=Readiness)
    ops_port: int | None = None  # the operations listener's port (None: off)

    @property
    def announcer(self) -> Announcer:
        """Where this process's server transitions announce themselves (`lifecycle.transition`)."""
        return Announcer(self.settings.nats_namespace, self.relay, self.relay.origin)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a background task for the life of the runtime; a crash is logged, not swallowed silently."""
        task = asyncio.create_task(coro, name=name)

        def done(t: asyncio.Task[Any]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s died: %r", name, t.exception())

        task.add_done_callback(done)
        self.tasks.append(task)
        return task


@contextlib.asynccontextmanager
async def open_runtime(settings: ServiceSettings, service: str, *, pool_size: int = 10,
                       max_overflow: int | None = None, exit_on_shutdown: bool = False,
                       exit_on_bus_closed: bool | None = None) -> AsyncIterator[Runtime]:
    """Open database, secret key, bus and outbox relay for `service`; close them on exit.

    With `exit_on_shutdown` (a service process, not an app in a test), a `hub.shutdown` event makes the
    process stop as SIGTERM would, and it exits 0. With `exit_on_bus_closed` (default: as
    `exit_on_shutdown`), a NATS connection closed for good stops the process the same way.
    """
    from fleethub.shared.db.engine import make_engine, make_sessionmaker
    from fleethub.shared.db.migrate import ensure_migrated, load_secret_key
    from fleethub.shared.health import database_ok
    from fleethub.shared.outbox import OutboxRelay

    replica = replica_id(service)
    bind_service(service, replica)  # this task and those it starts (consumers, relay, loops) log as this replica
    hosted = HOSTING.get()
    engine = hosted.engine_for(service) if hosted else make_engine(settings.require_database_url(), pool_size=pool_size,
                                                                           max_overflow=max_overflow)
    bus: Bus | None = None
    runtime: Runtime | None = None
    try:
        await ensure_migrated(engine)
        key = settings.secret_key.get_secret_value() if settings.secret_key else await load_secret_key(engine)
        bus = Bus(settings.nats_url, settings.nats_namespace, replica, bus_credentials(settings, service),
                  replicas=settings.nats_replicas)
        bus.connection.exit_on_close = exit_on_shutdown if exit_on_bus_closed is None else exit_on_bus_closed
        if hosted:
            hosted.pace(bus)
        await bus.connect()
        await bus.answer_pings(replica_info(service, replica))  # `fleethub status` lists this replica
        await bus.ensure_topology()
        sessions = make_sessionmaker(engine)
        relay = OutboxRelay(sessions, bus, origin=service, also=relays_for(service),
                            **({"poll_interval": hosted.relay_poll} if hosted else {}))
        readiness = Readiness(bus.consumers)
        readiness.add("database", lambda: database_ok(engine))
        readiness.add("bus", _connected(bus))
        runtime = Runtime(settings, replica, engine, sessions, bus, key, relay,
                          read_sessions=make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT")),
                          metrics=Metrics(service), readiness=readiness)
        runtime.spawn(relay.run(), "outbox-relay")
        runtime.spawn(runtime.metrics.watch_event_loop(), "event-loop-watch")
        if exit_on_shutdown:
            await exit_on_hub_shutdown(bus, settings.nats_namespace)
        async with ops_listener(settings.ops.of(service), runtime.metrics, readiness) as port:
            runtime.ops_port = port
            yield runtime
    finally:
        if runtime is not None:
            for task in runtime.tasks:
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)
        if bus is not None:
            await bus.close()
        if hosted is None:  # a borrowed engine is its host's to dispose of
            await engine.dispose()


def _connected(bus: Bus) -> Callable[[], Awaitable[bool]]:
    async def connected() -> bool:
        return bus.healthy.is_set()

    return connected


async def exit_on_hub_shutdown(bus: Bus, namespace: str, *, proxy: bool = False) -> None:
    """Stop this process gracefully (SIGTERM to itself) on a `hub.shutdown` event (for a proxy node: only
    when the event asks the proxies to stop)."""
    from fleethub.shared.events import HubShutdown, subject_filter

    async def on_event(envelope: Any, message: Any) -> None:
        if isinstance(message, HubShutdown) and (message.proxy or not proxy):
            log.warning("hub shutdown requested through the API: stopping")
            os.kill(os.getpid(), signal.SIGTERM)

    await bus.subscribe_events(subject_filter(HubShutdown, namespace), on_event)


def settle_heap() -> None:
    """Take what a service built at start (app, routes, caches, connections) out of the garbage
    collector's full passes (`gc.freeze`), after collecting what start-up left behind.

    Those objects live as long as the process; walking them made each full collection of the api
    take ~100 ms, a stall every request in flight waited out. For service processes only: frozen
    objects are never collected, which a test process starting many apps would accumulate.
    """
    gc.collect()
    gc.freeze()


def run_async(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` on uvloop; SIGINT/SIGTERM set `stop` (a second signal cancels outright)."""
    import uvloop

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal() -> None:
            if stop.is_set() and task is not None:
                task.cancel()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await main(stop)

    with contextlib.suppress(asyncio.CancelledError):
        uvloop.run(runner())


def bind_socket(host: str, port: int, *, listen: bool = True, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket (port 0 picks a free one), listening unless `listen` is False.

    A bound socket that does not listen yet holds its port but is sent no connection. With
    `reuse_port`, several processes bind the same port (SO_REUSEPORT) and the kernel spreads
    connections over those that listen.

    Raises:
        ConfigError: the address can not be bound (in use, not local), naming it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it (no Nagle delay)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
    if listen:
        sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def reachable_host() -> str:
    """An address of this machine others can reach, for services bound to all interfaces."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def advertise_url(listen: ListenSettings, sock: socket.socket) -> str:
    """The URL other services use to reach this replica."""
    if listen.advertise_url:
        return listen.advertise_url.rstrip("/")
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = reachable_host()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def serve_app(app: Any, sock: socket.socket, log_level: str) -> None:
    """Serve an ASGI app on an already-bound socket until SIGINT/SIGTERM (uvicorn handles signals)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        log_config=None,
        log_level=log_level.lower(),
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _dated(app: Any) -> Any:
    """`app` with a Date header on every response, formatted once per second of the clock at most."""
    from email.utils import formatdate

    last: list[Any] = [0, b""]

    async def dated(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_dated(message: Any) -> None:
            if message["type"] == "http.response.start":
                now = int(time.time())
                if now != last[0]:
                    last[0], last[1] = now, formatdate(now, usegmt=True).encode()
                message = {**message, "headers": [(b"date", last[1]), *message.get("headers", ())]}
            await send(message)

        await app(scope, receive, send_dated)

    return dated


async def serve_app_until(app: Any, sock: socket.socket, log_level: str, stop: asyncio.Event) -> None:
    """Serve an ASGI app on an already-bound socket in the running loop until `stop` is set (a service hosted
    beside others in one process: the host owns the signals, so uvicorn installs no handler of its own)."""
    import uvicorn

    class Hosted(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

        async def main_loop(self) -> None:
            # uvicorn's own wakes ten times a second to look for a signal and to renew its Date header once a
            # second: `stop` is awaited instead, and each response gets its Date from `_dated` (no idle tick)
            await self.on_tick(0)
            await stop.wait()
            self.should_exit = True

    config = uvicorn.Config(_dated(app), loop="none", http="httptools", log_config=None,
                            log_level=log_level.lower(), access_log=False, proxy_headers=True,
                            forwarded_allow_ips="127.0.0.1", timeout_graceful_shutdown=5, date_header=False)
    server = Hosted(config)
    await server.serve(sockets=[sock])
    if not server.started and not stop.is_set():  # the lifespan failed: the host must hear of it
        raise RuntimeError("the app did not start (its lifespan failed; see the log above)")
