"""The culler process: a periodic pass over running servers, plus live activity from the bus; it stops an idle
server as the api does, by requesting desired state 'stopped' (`lifecycle.transition`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from fleethub.services.culler.idle import RunningServer, idle_servers, merge_activity, running_servers
from fleethub.shared.events import ActivityReported, Envelope, Message, StopServer, subject_filter, utcnow
from fleethub.shared.faults import fault
from fleethub.shared.lifecycle import Announcer, Request, ServerKey, transition
from fleethub.shared.names import parse_route_key
from fleethub.shared.service import Runtime, open_runtime, run_async
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class ActivityView:
    """The newest activity per server seen on the bus since this process started."""

    def __init__(self) -> None:
        self.seen: dict[ServerKey, datetime] = {}

    async def on_event(self, envelope: Envelope, message: Message) -> None:
        if not isinstance(message, ActivityReported):
            return
        for route in message.routes:
            try:
                key = ServerKey(*parse_route_key(route.key))
            except ValueError:
                continue
            if key not in self.seen or self.seen[key] < route.last_activity:
                self.seen[key] = route.last_activity


async def cull_once(runtime: Runtime, view: ActivityView) -> list[ServerKey]:
    """One pass: request a stop of every idle server; returns the servers whose stop this pass requested."""
    async with runtime.sessions() as session:
        servers = await running_servers(session)
    servers = [merge_activity(s, view.seen.get(s.key)) for s in servers]
    announcer = runtime.announcer
    culled = []
    for server in idle_servers(servers, utcnow(), runtime.settings.culler.timeout):
        if await _stop(runtime, server, announcer):
            log.info("culling %s (idle since %s)", server.key, server.idle_since())
            culled.append(server.key)
            # the stop is committed with its command in the outbox: a crash here loses nothing (the api's and
            # the culler's relays publish it; the next pass finds the server stopping, not running)
            fault("culler.after_stop_cmd")
    return culled


async def _stop(runtime: Runtime, server: RunningServer, announcer: Announcer) -> bool:
    """Request the stop of `server`; False if it was requested already (by another pass, replica or the api).

    The culler writes `servers.desired` as the api's stop does, through the same `lifecycle.transition`: the
    culled server shows `pending: "stop"` in the REST API at once (as JupyterHub's culler, whose DELETE sets
    it), and the command is enqueued with the desired state, so the two cannot split. The row's condition
    (this spawn, desired running) makes culler replicas and repeated passes collapse into one command.
    """
    if server.recorded:
        async with runtime.sessions() as session, session.begin():
            request = Request.stop(server.key, server.spawn_id, reason="culler", backend=server.backend)
            return await transition(session, request, announcer) is not None
    # no `servers` row holds this spawn (none at all, or one of a newer spawn): no desired state to record, but
    # the server runs; one message id per spawn makes culler replicas and repeated passes collapse on the bus
    log.warning("culling %s: spawn %s has no servers row; sending its stop directly", server.key, server.spawn_id)
    await runtime.bus.publish(
        StopServer(user=server.user, server_name=server.server_name, spawn_id=server.spawn_id, reason="culler",
                   backend=server.backend),
        msg_id=f"cull-{server.spawn_id}",
    )
    return True


async def main(settings: ServiceSettings, stop: asyncio.Event) -> None:
    async with open_runtime(settings, "culler", pool_size=2, exit_on_shutdown=True) as runtime:
        view = ActivityView()
        await runtime.bus.subscribe_events(subject_filter(ActivityReported, settings.nats_namespace), view.on_event)
        log.info("culler running: timeout %ss, every %ss", settings.culler.timeout, settings.culler.interval)
        while not stop.is_set():
            fault("culler.before_pass")
            if settings.culler.enabled:
                try:
                    await cull_once(runtime, view)
                except Exception as exc:  # DB or NATS away: the next pass tries again
                    log.warning("cull pass failed: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), settings.culler.interval)
            except TimeoutError:
                pass


def run(settings: ServiceSettings) -> None:
    """Run the culler until SIGINT/SIGTERM."""
    run_async(lambda stop: main(settings, stop))


serve = main  # hosted beside other services in one process by `fleethub up`: the same body, the host's loop
