"""The route table bucket: `Route` values under the keys the spawner (`user.<user>.<server>`,
`service.<name>`) and the proxies' route API (`path.<segment>…`) derive (`fleethub.shared.names`)."""

from __future__ import annotations

from fleethub.shared.bus.kv import ModelBucket
from fleethub.shared.bus.topology import Topology
from fleethub.shared.events import Route


class RouteStore(ModelBucket[Route]):
    """The route table every proxy node serves, as `Route` models.

    Reads (`get`, `keys`, `snapshot`) and the watch (`follow`) come from `ModelBucket`.
    """

    def __init__(self, topology: Topology) -> None:
        super().__init__(topology, topology.names.routes_bucket, Route, "route")

    async def put(self, key: str, route: Route) -> int:
        """Upsert the route under `key`; every proxy node sees it through its watch. Returns the bucket's
        revision of the write (what proxy nodes acknowledge once they serve it).

        Raises:
            BusError: NATS failed (`BusTimeout`: no answer in time).
        """
        return await self._put(key, route)

    async def delete(self, key: str) -> None:
        """Delete the route under `key` (a no-op if it is absent).

        Raises:
            BusError: NATS failed (`BusTimeout`: no answer in time).
        """
        await self._delete(key)
