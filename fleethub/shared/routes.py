"""The user and service routes of the route table, and their reconciliation with PostgreSQL.

The spawner puts and deletes a server's route as it starts and stops it; the reconciliation round
(run by spawner workers, under one cluster-wide lock) makes the table equal what PostgreSQL says is
running plus the configured services. The spawner alone may write routes (bus permissions): the api's
`POST/PATCH /hub/api/proxy` asks a spawner worker for a round (`request_reconciliation`, answered by
`serve_reconciliation`). It lives here, over the bus and the database, so that no service package
imports another's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleethub.shared.bus import Bus, BusError, reconcile_subject
from fleethub.shared.db.locks import AdvisoryLock, lock, try_lock, unlock
from fleethub.shared.db.models import HubServiceRow, ServerState
from fleethub.shared.events import Route
from fleethub.shared.lifecycle import ServerStatus
from fleethub.shared.names import parse_route_key, route_key, server_prefix, service_route_key
from fleethub.shared.settings import HubService

log = logging.getLogger(__name__)


def route_for(user: str, server_name: str, target: str, spawn_id: str) -> Route:
    """The route of a running server."""
    return Route(
        routespec=server_prefix(user, server_name),
        target=target,
        data={"user": user, "server_name": server_name},
        spawn_id=spawn_id,
    )


def service_routes(services: Iterable[HubService]) -> dict[str, Route]:
    """The routes of the configured services that have a URL: `/services/<name>/` → their origin."""
    return {service_route_key(svc.name): Route(routespec=svc.prefix, target=svc.url, data={"service": svc.name})
            for svc in services if svc.url}


async def reconcile(bus: Bus, running: list[Route], services: Iterable[HubService] = (), *,
                    starting: Collection[str] = (), keys: list[str] | None = None) -> tuple[int, int]:
    """Make the user and service routes in KV equal `running` and `services`; returns (put, deleted).

    The whole key list is read before anything is deleted, so a partial view never removes a route.
    Other keys (routes added through a proxy's route API) are left alone, and so are the keys in
    `starting` (servers being started: their worker puts the route before it records them running).
    `keys`: the route keys as listed before PostgreSQL was read (listed here when not given).

    Raises:
        BusError: NATS failed (what was put or deleted before stays).
    """
    routes = bus.routes
    keys = [k for k in (await routes.keys() if keys is None else keys) if k.startswith(("user.", "service."))]
    wanted = {route_key(r.data["user"], r.data["server_name"]): r for r in running}
    wanted.update(service_routes(services))
    put = deleted = 0
    for key, route in wanted.items():
        current = None
        if key in keys:
            try:
                current = await routes.get(key)
            except BusError:  # unknown: put it again
                current = None
        if current != route:
            await routes.put(key, route)
            put += 1
    for key in keys:
        if key not in wanted and key not in starting:
            try:
                if key.startswith("user."):
                    parse_route_key(key)
            except ValueError:
                continue
            await routes.delete(key)
            deleted += 1
    if put or deleted:
        log.info("route reconciliation: %d put, %d deleted", put, deleted)
    return put, deleted


async def _services(session: AsyncSession, configured: Iterable[HubService]) -> list[HubService]:
    """The configured services, plus the ones created through the API (read from PostgreSQL)."""
    out = {svc.name: svc for svc in configured}
    rows = await session.execute(select(HubServiceRow).where(HubServiceRow.url.is_not(None)))
    for row in rows.scalars():
        if row.name not in out and row.url:
            try:
                out[row.name] = HubService(name=row.name, url=row.url)
            except ValueError:
                log.warning("service %s has an unusable url; not routed", row.name)
    return list(out.values())


async def reconcile_round(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], bus: Bus,
                          configured: Iterable[HubService], *, wait: bool = False) -> tuple[int, int] | None:
    """One reconciliation of KV with PostgreSQL, under the cluster-wide lock; None if another holder has it
    (unless `wait`, which queues behind it)."""
    async with engine.connect() as conn:
        if wait:
            await lock(conn, AdvisoryLock.ROUTE_RECONCILE)
        elif not await try_lock(conn, AdvisoryLock.ROUTE_RECONCILE):
            return None
        try:
            # the keys first, PostgreSQL second: a route listed here was put by then, so its server is
            # pending or running in the read that follows (unless it stopped, whose worker deletes it);
            # read the other way round, a spawn that went ready in between lost its fresh route
            keys = await bus.routes.keys()
            async with sessions() as session:
                live = select(ServerState).where(ServerState.status.in_((ServerStatus.RUNNING, ServerStatus.PENDING)))
                rows = list((await session.execute(live)).scalars())
                routes = [route_for(r.user_name, r.server_name, r.target, r.spawn_id) for r in rows
                          if r.target and r.status == ServerStatus.RUNNING]
                starting = {route_key(r.user_name, r.server_name) for r in rows if r.status == ServerStatus.PENDING}
                services = await _services(session, configured)
            return await reconcile(bus, routes, services, starting=starting, keys=keys)
        finally:
            await unlock(conn, AdvisoryLock.ROUTE_RECONCILE)


RECONCILE_TIMEOUT = 30.0  # seconds the api waits for a spawner worker's round (it may queue behind one)


async def serve_reconciliation(bus: Bus, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession],
                               configured: Iterable[HubService]) -> Any:
    """Answer the api's reconciliation requests (one spawner worker takes each): run a round, waiting for
    the lock, and answer `{"put": n, "deleted": n}`. Returns the subscription."""

    async def answer(_body: bytes) -> bytes:
        put, deleted = await reconcile_round(engine, sessions, bus, configured, wait=True) or (0, 0)
        return json.dumps({"put": put, "deleted": deleted}).encode()

    return await bus.serve(reconcile_subject(bus.namespace), "spawner", answer)


async def request_reconciliation(bus: Bus, timeout: float = RECONCILE_TIMEOUT) -> tuple[int, int]:
    """Have a spawner worker reconcile the route table now; returns (put, deleted).

    Raises:
        BusError: no spawner worker answered (none runs, or not in time).
    """
    try:
        raw = await bus.request(reconcile_subject(bus.namespace), b"", timeout)
        answer = json.loads(raw)
        return int(answer["put"]), int(answer["deleted"])
    except BusError as exc:
        raise BusError(f"no spawner worker reconciled the route table: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BusError(f"a spawner worker gave an unreadable answer: {exc}") from None
