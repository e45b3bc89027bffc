"""The spawner worker process."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fleethub.services.spawner.backends import load_backend
from fleethub.services.spawner.consumers import command_handler, dead_letter_sink
from fleethub.services.spawner.lifecycle import Worker
from fleethub.services.spawner.managed import ManagedServices
from fleethub.shared.authenticators import load_authenticator
from fleethub.shared.bus.permissions import LEGACY_SPAWNER_DURABLE, spawner_durable
from fleethub.shared.db.engine import handler_pool
from fleethub.shared.events import backend_commands_filter
from fleethub.shared.metrics import Refresher
from fleethub.shared.profiles import served_backends
from fleethub.shared.routes import serve_reconciliation
from fleethub.shared.service import Runtime, open_runtime, run_async
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    served = served_backends(settings.spawner)
    backends = {name: load_backend(settings, name) for name in served}
    authenticator = load_authenticator(settings)  # for its pre_spawn_start; a bad name fails here
    pool_size, max_overflow = handler_pool(settings.spawner.max_concurrent * len(served))
    async with open_runtime(settings, "spawner", pool_size=pool_size, max_overflow=max_overflow,
                            exit_on_bus_closed=True) as runtime, \
            contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(authenticator.close)
        worker = Worker(runtime, backends, authenticator)
        await worker.propagation.start()  # hear the proxy nodes before the first spawn needs them
        for loop, name in ((worker.renew_loop(), "renew"), (worker.fence_loop(), "fence"),
                           (worker.adopt_loop(), "adopt"), (worker.poll_loop(), "poll"),
                           (worker.reconcile_loop(), "reconcile")):
            runtime.spawn(loop, name)
        managed = ManagedServices(settings, runtime.secret_key, runtime.engine)
        runtime.spawn(managed.run(), "managed-services")
        # the api's `POST /hub/api/proxy`: only the spawner may write routes
        await serve_reconciliation(runtime.bus, runtime.engine, runtime.sessions, settings.services)
        if await runtime.bus.drop_durable("cmd", LEGACY_SPAWNER_DURABLE):
            log.warning("deleted the command consumer of an older version (%r): commands are now taken per "
                        "backend; commands still queued under the old subjects are not carried out",
                        LEGACY_SPAWNER_DURABLE)
        runtime.metrics.refreshers.append(command_queues(runtime, served))
        log.info("spawner worker %s running (backends %s)", runtime.replica, ", ".join(served))
        # one durable per backend, shared by every worker serving it: a command reaches only workers that
        # can carry it out (a Slurm login node, a Docker host), and waits in the stream until one runs
        consumers = [
            runtime.spawn(
                runtime.bus.consume(
                    durable=spawner_durable(name),
                    filter_subject=backend_commands_filter(settings.nats_namespace, name),
                    kind="cmd",
                    handler=command_handler(worker),
                    dead_letter=dead_letter_sink(worker),
                    concurrency=settings.spawner.max_concurrent,
                    stop=stop,
                ),
                f"consume {name}",
            )
            for name in served
        ]
        await stop.wait()
        await asyncio.wait(consumers, timeout=5)
        await managed.stop_all()  # managed services stop with their worker; another worker starts them
        # servers keep running: another worker (or this one, restarted) adopts them when the lease expires


def command_queues(runtime: Runtime, served: list[str]) -> Refresher:
    """A refresher of the command queue gauges of the backends this worker serves, from JetStream's consumer
    info (the same for every worker of a backend: aggregate with max)."""

    async def refresh_command_queues() -> None:
        metrics = runtime.metrics
        for name in served:
            durable = spawner_durable(name)
            pending, in_flight, redelivered = await runtime.bus.consumer_state("cmd", durable)
            metrics.queue_depth.labels(consumer=durable).set(pending)
            metrics.in_flight.labels(consumer=durable).set(in_flight)
            metrics.redelivered.labels(consumer=durable).set(redelivered)

    return refresh_command_queues


def run(settings: ServiceSettings) -> None:
    """Run one spawner worker until SIGINT/SIGTERM."""
    run_async(lambda stop: main(settings, stop))


serve = main  # hosted beside other services in one process by `fleethub up`: the same body, the host's loop
