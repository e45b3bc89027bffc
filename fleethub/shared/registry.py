"""The service registry: auth and api replicas announce their URL in a KV bucket with a TTL.

A replica refreshes its key well inside the TTL; a dead replica's key expires by itself, so proxies
stop sending it traffic without anyone deleting anything.
"""

from __future__ import annotations

import asyncio
import logging

from fleethub.shared.bus import REGISTRY_TTL, Bus
from fleethub.shared.events import RegistryEntry
from fleethub.shared.names import encode_token

log = logging.getLogger(__name__)


def registry_key(service: str, replica: str) -> str:
    """The key of one replica: `<service>.<replica>`."""
    return f"{service}.{encode_token(replica)}"


async def announce(bus: Bus, entry: RegistryEntry, interval: float = REGISTRY_TTL / 3) -> None:
    """Keep `entry` in the registry until cancelled; then remove it at once."""
    key = registry_key(entry.service, entry.replica)
    value = entry.model_dump_json().encode()
    try:
        while True:
            try:
                kv = await bus.registry()
                await kv.put(key, value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: keep trying; proxies keep their last view meanwhile
                log.warning("registry refresh failed: %s", exc)
            await asyncio.sleep(interval)
    finally:
        try:
            kv = await bus.registry()
            await asyncio.wait_for(kv.delete(key), 2)
        except Exception:
            pass
