"""The user and service routes of the route table, and their reconciliation with PostgreSQL.

The spawner puts and deletes a server's route as it starts and stops it; the reconciliation round
(run by spawner workers, under one cluster-wide lock) makes the table equal what PostgreSQL says is
running plus the configured services. It reads the table (with revisions) before PostgreSQL and writes
only where a key's revision is unchanged, so it can never bring back a route a stop just deleted.
The spawner alone may write routes (bus permissions): the api's `POST/PATCH /hub/api/proxy` asks a
spawner worker for a round (`request_reconciliation`, answered by `serve_reconciliation`).
It lives here, over the bus and the database, so that no service package imports another's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleethub.shared.bus import Bus, BusError, Version, reconcile_subject
from fleethub.shared.db.locks import AdvisoryLock, lock, try_lock, unlock
from fleethub.shared.db.models import HubServiceRow, ServerState
from fleethub.shared.errors import Unavailable
from fleethub.shared.events import Route
from fleethub.shared.lifecycle import ACTIVE, ServerStatus
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


RESURRECT_GRACE = 5.0
"""Seconds a deleted route of a server PostgreSQL calls running is left deleted: whoever deleted it (a stop,
a worker that saw the process exit) records the server's end right after; only a route still missing
later is put back."""


@dataclass(frozen=True)
class Wanted:
    """What PostgreSQL says, read after the route table: the routes that should exist, and the keys of
    servers a worker is on (pending or stopping), whose routes the reconciliation leaves to that worker."""

    routes: dict[str, Route]
    busy: frozenset[str] = frozenset()


async def reconcile(bus: Bus, seen: dict[str, Version[Route]], wanted: Wanted) -> tuple[int, int]:
    """Make the user and service routes in KV equal `wanted`; returns (put, deleted).

    `seen` must be read from KV before PostgreSQL was read for `wanted`: every write is conditional on the
    key's revision in `seen`, so a route deleted (or put) after that read is never overwritten from the
    older view; such a key waits for the next round. A route deleted less than `RESURRECT_GRACE` seconds
    ago is not put back; routes of busy servers and other keys (a proxy's route API) are left alone.

    Raises:
        BusError: NATS failed (what was put or deleted before stays).
    """
    routes, now = bus.routes, time.time()
    put = deleted = skipped = 0
    for key, route in wanted.routes.items():
        version = seen.get(key)
        if version is not None and version.value == route:
            continue
        if version is not None and version.deleted and now - version.written < RESURRECT_GRACE:
            continue  # deleted on purpose moments ago: its deleter records the server's end next
        if await routes.put_if(key, route, version.revision if version is not None else 0):
            put += 1
        else:
            skipped += 1
    for key, version in seen.items():
        if version.deleted or key in wanted.routes or key in wanted.busy or not _ours(key):
            continue
        if await routes.delete_if(key, version.revision):
            deleted += 1
        else:
            skipped += 1
    if put or deleted or skipped:
        log.info("route reconciliation: %d put, %d deleted, %d changed meanwhile (next round)", put, deleted,
                 skipped)
    return put, deleted


def _ours(key: str) -> bool:
    """Whether the reconciliation manages `key`: a (well-formed) user route or a service route."""
    if key.startswith("service."):
        return True
    if not key.startswith("user."):
        return False
    try:
        parse_route_key(key)
    except ValueError:
        return False
    return True


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


async def wanted_routes(session: AsyncSession, configured: Iterable[HubService]) -> Wanted:
    """The routes PostgreSQL says should exist, and the busy servers' keys."""
    active = select(ServerState).where(ServerState.status.in_(sorted(ACTIVE)))
    routes: dict[str, Route] = {}
    busy: set[str] = set()
    for r in (await session.execute(active)).scalars():
        key = route_key(r.user_name, r.server_name)
        if r.status == ServerStatus.RUNNING and r.target:
            routes[key] = route_for(r.user_name, r.server_name, r.target, r.spawn_id)
        else:
            busy.add(key)
    routes.update(service_routes(await _services(session, configured)))
    return Wanted(routes, frozenset(busy))


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
            seen = await bus.routes.versions()  # before PostgreSQL: see `reconcile`
            async with sessions() as session:
                wanted = await wanted_routes(session, configured)
            return await reconcile(bus, seen, wanted)
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
        Unavailable: no spawner worker answered (none runs, or not in time): NATS itself is up (a request
            that needs it checks that first), so the message names the missing spawner, not the bus.
    """
    try:
        raw = await bus.request(reconcile_subject(bus.namespace), b"", timeout)
        answer = json.loads(raw)
        return int(answer["put"]), int(answer["deleted"])
    except BusError as exc:
        log.warning("no spawner worker reconciled the route table: %s", exc)
        raise Unavailable("No spawner worker answered; the route table was not reconciled, try again "
                          "once a spawner worker runs") from None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("a spawner worker gave an unreadable answer to a reconciliation request: %s", exc)
        raise Unavailable("A spawner worker gave an unreadable answer; try again") from None
