"""The spawner's side of the route table: put and delete user routes, and reconcile with PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from nats.js.errors import NoKeysError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleethub.shared.bus import Bus
from fleethub.shared.db.locks import AdvisoryLock, lock, try_lock, unlock
from fleethub.shared.db.models import HubServiceRow, ServerState
from fleethub.shared.events import Route
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


async def put_route(bus: Bus, route: Route) -> None:
    """Upsert a route; every proxy node sees it through its watch."""
    kv = await bus.routes()
    user, server_name = route.data["user"], route.data["server_name"]
    await kv.put(route_key(user, server_name), route.model_dump_json().encode())


async def delete_route(bus: Bus, user: str, server_name: str) -> None:
    """Delete a route (a no-op if it is absent)."""
    kv = await bus.routes()
    await kv.delete(route_key(user, server_name))


def service_routes(services: Iterable[HubService]) -> dict[str, Route]:
    """The routes of the configured services that have a URL: `/services/<name>/` → their origin."""
    return {service_route_key(svc.name): Route(routespec=svc.prefix, target=svc.url, data={"service": svc.name})
            for svc in services if svc.url}


async def reconcile(bus: Bus, running: list[Route], services: Iterable[HubService] = ()) -> tuple[int, int]:
    """Make the user and service routes in KV equal `running` and `services`; returns (put, deleted).

    The whole key list is read before anything is deleted, so a partial view never removes a route.
    Other keys (routes added through a proxy's route API) are left alone.
    """
    kv = await bus.routes()
    try:
        keys = [k for k in await kv.keys() if k.startswith(("user.", "service."))]
    except NoKeysError:
        keys = []
    wanted = {route_key(r.data["user"], r.data["server_name"]): r for r in running}
    wanted.update(service_routes(services))
    put = deleted = 0
    for key, route in wanted.items():
        entry = None
        if key in keys:
            try:
                entry = await kv.get(key)
            except Exception:
                entry = None
        current = Route.model_validate_json(entry.value) if entry is not None and entry.value else None
        if current != route:
            await kv.put(key, route.model_dump_json().encode())
            put += 1
    for key in keys:
        if key not in wanted:
            try:
                if key.startswith("user."):
                    parse_route_key(key)
            except ValueError:
                continue
            await kv.delete(key)
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
            async with sessions() as session:
                rows = (await session.execute(select(ServerState).where(ServerState.status == "running"))).scalars()
                routes = [route_for(r.user_name, r.server_name, r.target, r.spawn_id) for r in rows if r.target]
                services = await _services(session, configured)
            return await reconcile(bus, routes, services)
        finally:
            await unlock(conn, AdvisoryLock.ROUTE_RECONCILE)
