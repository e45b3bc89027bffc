"""The NATS connection: connect with unlimited reconnects and a short ping interval, every background
callback wired to logs and to `Connection.healthy`, and drain on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from fleethub.shared.errors import BusError

log = logging.getLogger(__name__)


class Connection:
    """One NATS client connection and its JetStream context, with its health as events.

    Args:
        servers: NATS URL(s), comma-separated.
        name: client name shown by the server (service and replica).

    Attributes:
        healthy: set while connected.
        reconnected: set on every reconnect (whoever waits on it clears it).
        on_reconnect: called on every reconnect (core subscriptions may have missed messages meanwhile).
        closed: set once the connection is closed for good.
    """

    def __init__(self, servers: str, name: str) -> None:
        self.servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.name = name
        self.healthy = asyncio.Event()
        self.reconnected = asyncio.Event()
        self.on_reconnect: list[Callable[[], None]] = []
        self.closed = asyncio.Event()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._closing = False

    @property
    def nc(self) -> NatsClient:
        """The core NATS client.

        Raises:
            BusError: not connected.
        """
        if self._nc is None:
            raise BusError("bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context.

        Raises:
            BusError: not connected.
        """
        if self._js is None:
            raise BusError("bus is not connected")
        return self._js

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def _on_disconnected(self) -> None:
        self.healthy.clear()
        log.warning("nats disconnected")

    async def _on_reconnected(self) -> None:
        self.healthy.set()
        self.reconnected.set()
        for callback in self.on_reconnect:
            callback()
        log.info("nats reconnected")

    async def _on_closed(self) -> None:
        self.healthy.clear()
        self.closed.set()
        if self._closing:  # our own close (shutdown): not an error
            log.info("nats connection closed")
        else:
            log.error("nats connection closed")

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, retrying until `timeout`; afterwards reconnect forever.

        Raises:
            BusError: no server answered within `timeout`.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                self._nc = await nats.connect(
                    servers=self.servers,
                    name=self.name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    ping_interval=2,
                    max_outstanding_pings=3,
                    connect_timeout=2,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                )
                break
            except Exception as exc:  # nats raises several unrelated types for "not there yet"
                if asyncio.get_running_loop().time() > deadline:
                    raise BusError(f"cannot connect to NATS at {','.join(self.servers)}: {exc}") from None
                await asyncio.sleep(0.2)
        self._js = self._nc.jetstream(timeout=5)
        self.healthy.set()

    async def close(self) -> None:
        """Drain and close the connection."""
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), 5)
            except Exception:
                await self._nc.close()
        self._nc = None
        self._js = None
