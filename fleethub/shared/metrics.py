"""Prometheus metrics of one service runtime: its own `CollectorRegistry` (never the process-global default,
so several services hosted in one interpreter each export only their own), JupyterHub's metric names
wherever the meaning is the same, and fleethub's own (`fleethub_*`).

Every metric object exists on every `Metrics`, so code observes without asking which service it runs in;
only the groups a service registers (`GROUPS`) are exported by it. Values read from elsewhere at scrape
time (PostgreSQL, JetStream consumer info) are refreshed by `refreshers` just before each exposition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REFRESH_TIMEOUT = 3.0  # seconds a scrape waits for the values it reads from PostgreSQL or JetStream
LOOP_RESOLUTION = 1.0  # seconds between event-loop ticks (JupyterHub: 50 ms; a longer sleep keeps idle CPU low)

# JupyterHub's buckets (jupyterhub/metrics.py), so dashboards made for it read ours the same way
SPAWN_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600, float("inf"))
STOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, float("inf"))
LOOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, float("inf"))
PROPAGATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, float("inf"))

ACTIVE_PERIODS = {"24h": 1, "7d": 7, "30d": 30}  # JupyterHub's `period` label values, in days

Refresher = Callable[[], Awaitable[None]]

# which metric groups each service exports (see `Metrics.__init__` for the members of each group)
GROUPS: dict[str, tuple[str, ...]] = {
    "api": ("process", "http", "hub"),
    "auth": ("process", "http", "login"),
    "spawner": ("process", "spawner"),
    "proxy": ("process", "proxy"),
    "culler": ("process",),
}


class Metrics:
    """The metrics of one service runtime and the registry that exports the ones it owns.

    Args:
        service: the service ("api", "auth", "spawner", "proxy", "culler"); chooses the exported groups.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.refreshers: list[Refresher] = []
        exported = set(GROUPS.get(service, ("process",)))

        def reg(group: str) -> CollectorRegistry | None:
            return self.registry if group in exported else None

        p, h, hub, login, sp, px = (reg(g) for g in ("process", "http", "hub", "login", "spawner", "proxy"))
        self.event_loop_interval = Histogram(
            "jupyterhub_event_loop_interval_seconds", "How late the event loop woke from a timed sleep",
            buckets=LOOP_BUCKETS, registry=p)
        self.request_duration = Histogram(
            "jupyterhub_request_duration_seconds", "Request duration of this replica's HTTP requests",
            ["method", "handler", "code"], registry=h)
        # hub-wide gauges: every api replica computes them from PostgreSQL at scrape time (aggregate with max)
        self.total_users = Gauge("jupyterhub_total_users", "Users in the hub", registry=hub)
        self.active_users = Gauge("jupyterhub_active_users", "Users active within each period", ["period"],
                                  registry=hub)
        self.running_servers = Gauge("jupyterhub_running_servers", "Servers running (ready)", registry=hub)
        self.dead_letters = Gauge("fleethub_dead_letters", "Dead letters recorded (messages consumers gave up on)",
                                  registry=hub)
        self.outbox_lag = Gauge("fleethub_outbox_lag_seconds",
                                "Age of the oldest outbox row not yet published (0: none waits)", registry=hub)
        self.outbox_pending = Gauge("fleethub_outbox_pending", "Outbox rows not yet published", registry=hub)
        self.login_duration = Histogram("jupyterhub_login_duration_seconds", "Time taken by a login attempt",
                                        ["status"], registry=login)
        self.spawn_duration = Histogram("jupyterhub_server_spawn_duration_seconds",
                                        "Time from a spawn command taken to its server ready (or failed)",
                                        ["status"], buckets=SPAWN_BUCKETS, registry=sp)
        self.stop_duration = Histogram("jupyterhub_server_stop_seconds", "Time taken to stop a server",
                                       ["status"], buckets=STOP_BUCKETS, registry=sp)
        self.poll_duration = Histogram("jupyterhub_server_poll_duration_seconds", "Time taken to poll a server",
                                       ["status"], registry=sp)
        self.proxy_add = Histogram("jupyterhub_proxy_add_duration_seconds", "Time taken to write a route",
                                   ["status"], registry=sp)
        self.proxy_delete = Histogram("jupyterhub_proxy_delete_duration_seconds", "Time taken to delete a route",
                                      ["status"], registry=sp)
        self.check_routes = Histogram("jupyterhub_check_routes_duration_seconds",
                                      "Time taken to reconcile the route table with PostgreSQL", registry=sp)
        self.route_propagation = Histogram(
            "fleethub_route_propagation_seconds", "Time from a route write until a proxy node serves it",
            ["node"], buckets=PROPAGATION_BUCKETS, registry=sp)
        self.queue_depth = Gauge("fleethub_command_queue_depth", "Commands waiting for a worker (JetStream "
                                 "num_pending of the consumer)", ["consumer"], registry=sp)
        self.in_flight = Gauge("fleethub_command_in_flight", "Commands delivered and not yet settled",
                               ["consumer"], registry=sp)
        self.redelivered = Gauge("fleethub_command_redelivered", "Commands delivered more than once and not yet "
                                 "settled (JetStream num_redelivered)", ["consumer"], registry=sp)
        self.proxy_collector: ProxyCounters | None = None
        if px is not None:
            self.proxy_collector = ProxyCounters()
            px.register(self.proxy_collector)

    @contextmanager
    def timed(self, histogram: Histogram, ok: str = "success", failed: str = "failure") -> Iterator[None]:
        """Observe the duration of the block in `histogram`, labelled `status=ok`, or `status=failed` if the
        block raised (a cancellation is not observed)."""
        start = time.monotonic()
        try:
            yield
        except asyncio.CancelledError:
            raise
        except BaseException:
            histogram.labels(status=failed).observe(time.monotonic() - start)
            raise
        histogram.labels(status=ok).observe(time.monotonic() - start)

    async def exposition(self) -> bytes:
        """The text exposition, after refreshing the values read at scrape time (a refresher that fails or
        is slow leaves its metrics as they were, and is logged)."""
        for refresh in self.refreshers:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT):
                    await refresh()
            except Exception as exc:
                log.warning("metrics refresh %s failed: %r", getattr(refresh, "__name__", refresh), exc)
        return generate_latest(self.registry)

    async def watch_event_loop(self) -> None:
        """Observe, forever, how late the event loop wakes from a `LOOP_RESOLUTION` sleep."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(LOOP_RESOLUTION)
            now = loop.time()
            self.event_loop_interval.observe(max(0.0, now - last - LOOP_RESOLUTION))
            last = now


class ProxyCounters(Collector):
    """A proxy node's request and byte counts, kept as plain integers on the hot path by the node and read
    only when scraped (`fleethub_proxy_requests_total`, `fleethub_proxy_bytes_total{direction}`)."""

    def __init__(self) -> None:
        self.read: Callable[[], tuple[str, int, int, int]] | None = None  # → node, requests, bytes in, bytes out

    def collect(self) -> Iterable[Metric]:

        node, requests, bytes_in, bytes_out = self.read() if self.read else ("", 0, 0, 0)
        reqs = CounterMetricFamily("fleethub_proxy_requests", "HTTP requests this proxy node received", labels=["node"])
        reqs.add_metric([node], requests)
        sizes = CounterMetricFamily("fleethub_proxy_bytes", "Bytes this proxy node received from or sent to "
                                    "clients", labels=["node", "direction"])
        sizes.add_metric([node, "in"], bytes_in)
        sizes.add_metric([node, "out"], bytes_out)
        return [reqs, sizes]

    def describe(self) -> Iterable[Metric]:
        return self.collect()


SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",), "gauge": ("",)}


def exported_names(service: str) -> set[str]:
    """The sample names `service` exports (a histogram's `_bucket`, `_sum` and `_count`, a counter's `_total`)."""
    names = set()
    for family in Metrics(service).registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names
