"""The service registry bucket: `RegistryEntry` values of live auth and api replicas, under
`<service>.<replica>`; the bucket's TTL removes the key of a replica that stops refreshing it."""

from __future__ import annotations

from fleethub.shared.bus.kv import ModelBucket
from fleethub.shared.bus.topology import Topology
from fleethub.shared.events import RegistryEntry
from fleethub.shared.names import encode_token


def registry_key(service: str, replica: str) -> str:
    """The key of one replica: `<service>.<replica>`."""
    return f"{service}.{encode_token(replica)}"


class RegistryStore(ModelBucket[RegistryEntry]):
    """The live replicas, as `RegistryEntry` models.

    Reads (`get`, `keys`, `snapshot`: the live entries) and the watch (`follow`) come from `ModelBucket`.
    """

    def __init__(self, topology: Topology) -> None:
        super().__init__(topology, topology.names.registry_bucket, RegistryEntry, "registry entry")

    async def put(self, entry: RegistryEntry) -> None:
        """Add or refresh `entry` (its TTL starts again).

        Raises:
            BusError: NATS failed (`BusTimeout`: no answer in time).
        """
        await self._put(registry_key(entry.service, entry.replica), entry)

    async def delete(self, service: str, replica: str) -> None:
        """Remove a replica at once (rather than when its TTL runs out).

        Raises:
            BusError: NATS failed (`BusTimeout`: no answer in time).
        """
        await self._delete(registry_key(service, replica))
