"""An auth-enabled embedded NATS (the `fleethub up` configuration: one nkey per identity, the permission
table) and raw clients of its identities, for the tests of the bus permissions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from fleethub.shared.bus import Bus, Credentials, inbox_prefix
from fleethub.shared.bus.natsconfig import seed_file, write_config
from fleethub.shared.embedded import EmbeddedNats


@dataclass
class SecureNats:
    """A running auth-enabled NATS for one namespace, with the seeds of every identity."""

    server: EmbeddedNats
    keys: Path
    namespace: str

    @property
    def url(self) -> str:
        """The client URL."""
        return self.server.url

    def credentials(self, identity: str) -> Credentials:
        """The credentials of `identity`."""
        return Credentials(identity=identity, nkey_file=seed_file(self.keys, identity))

    def bus(self, identity: str) -> Bus:
        """A (not yet connected) `Bus` of `identity`."""
        return Bus(self.url, self.namespace, f"test-{identity}", self.credentials(identity))

    def violations(self) -> list[str]:
        """Permission violations the server logged."""
        return [line for line in self.server.log.read_text().splitlines() if "Violation" in line]


@contextlib.contextmanager
def secure_nats(directory: Path, namespace: str, port: int | None = None,
                webhooks: tuple[str, ...] = ()) -> Iterator[SecureNats]:
    """Start an auth-enabled NATS for `namespace` under `directory` (on `port`, which a restart keeps;
    None: a free one at each start), the api allowed the durables of the webhooks named `webhooks`;
    stopped on exit."""
    keys = directory / "keys"
    config = write_config(keys, namespace, webhooks)
    with EmbeddedNats(directory / "nats", port=port, config=config) as server:
        yield SecureNats(server, keys, namespace)


@dataclass
class RawClient:
    """A plain nats-py client of one identity that records the errors the server reports to it."""

    identity: str
    nc: NatsClient
    errors: list[str] = field(default_factory=list)

    async def refused(self, subject: str, what: str = "publish") -> bool:
        """Whether the server reported a permission violation for `what` ("publish"/"subscription") to
        `subject` (waiting up to 2 s for the report)."""
        wanted = f"permissions violation for {what} to \"{subject}\"".lower()
        for _ in range(100):
            if any(wanted in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False

    async def try_publish(self, subject: str, payload: bytes = b"{}", headers: dict[str, str] | None = None) -> bool:
        """Publish (as a request, as JetStream clients do) and tell whether the server refused it."""
        with contextlib.suppress(Exception):  # no answer to a refused publish: the request times out
            await self.nc.request(subject, payload, timeout=0.3, headers=headers)
        return await self.refused(subject)

    async def try_subscribe(self, subject: str) -> bool:
        """Subscribe and tell whether the server refused it."""
        sub = await self.nc.subscribe(subject)
        await self.nc.flush()
        refused = await self.refused(subject, "subscription")
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        return refused


async def raw_client(nats_: SecureNats, identity: str) -> RawClient:
    """A connected `RawClient` of `identity` (with its inbox prefix, as services connect)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(nats_.url, nkeys_seed=str(seed_file(nats_.keys, identity)),
                            inbox_prefix=inbox_prefix(identity), error_cb=on_error, allow_reconnect=False,
                            name=f"raw-{identity}")
    return RawClient(identity, nc, errors)


async def close_all(clients: dict[str, Any]) -> None:
    """Close every client (raw or `Bus`)."""
    for c in clients.values():
        with contextlib.suppress(Exception):
            await (c.nc.close() if isinstance(c, RawClient) else c.close())
