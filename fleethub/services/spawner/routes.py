"""The spawner's side of the route table: put a server's route before it is announced ready, delete it
before it is announced stopped. The reconciliation with PostgreSQL is `fleethub.shared.routes` (the api
runs it too)."""

from __future__ import annotations

from fleethub.shared.bus import Bus
from fleethub.shared.events import Route
from fleethub.shared.names import route_key

__all__ = ["delete_route", "put_route"]


async def put_route(bus: Bus, route: Route) -> int:
    """Upsert a route; every proxy node sees it through its watch. Returns the bucket revision written."""
    return await bus.routes.put(route_key(route.data["user"], route.data["server_name"]), route)


async def delete_route(bus: Bus, user: str, server_name: str) -> None:
    """Delete a route (a no-op if it is absent)."""
    await bus.routes.delete(route_key(user, server_name))
