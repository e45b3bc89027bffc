"""The service registry: auth and api replicas announce their URL in a KV bucket with a TTL.

A replica refreshes its key well inside the TTL; a dead replica's key expires by itself, so proxies
stop sending it traffic without anyone deleting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fleethub.shared.bus import REGISTRY_TTL, Bus, BusError, registry_key
from fleethub.shared.events import RegistryEntry

log = logging.getLogger(__name__)

__all__ = ["announce", "registry_key"]

RETRY = 0.5


async def announce(bus: Bus, entry: RegistryEntry, interval: float = REGISTRY_TTL / 3) -> None:
    """Keep `entry` in the registry until cancelled; then remove it at once.

    After a failed refresh it tries again every `RETRY` seconds, and at once on a reconnect: a NATS
    outage longer than the TTL emptied the registry (a restarted NATS lost the in-memory bucket too),
    and until this replica is back in it, proxies have nowhere to send its traffic.
    """
    wake = asyncio.Event()
    bus.on_reconnect.append(wake.set)
    try:
        while True:
            wait = interval
            try:
                await bus.registry.put(entry)
            except BusError as exc:  # NATS away: keep trying; proxies keep their last view meanwhile
                log.warning("registry refresh failed: %s", exc)
                wait = min(interval, RETRY)
                # a restarted NATS has lost the in-memory bucket: auth and the api may create it again
                # (the proxies, which read it, may not), and do so here
                with contextlib.suppress(BusError):
                    await bus.ensure_topology(timeout=min(interval, 2.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)
            wake.clear()
    finally:
        with contextlib.suppress(ValueError):
            bus.on_reconnect.remove(wake.set)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.registry.delete(entry.service, entry.replica), 2)
