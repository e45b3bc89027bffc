"""The NATS connection: connect with unlimited reconnects and a short ping interval, every background
callback wired to logs and to `Connection.healthy`, and drain on close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from fleethub.shared.errors import BusError

log = logging.getLogger(__name__)
# a connection without credentials warns once per process, not once per connection
_warned_anonymous = False


def inbox_prefix(identity: str) -> str:
    """The inbox prefix an identity connects with: its replies and deliveries come there, and only it may
    subscribe there."""
    return f"_INBOX_{identity}"


def bus_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or its cause chain) says NATS is away: our `BusError`, or a nats exception that escaped
    an adapter (a request on the bus while it reconnects)."""
    from nats.errors import Error as NatsError

    item: BaseException | None = exc
    for _ in range(10):
        if item is None:
            return False
        if isinstance(item, (BusError, NatsError)):
            return True
        item = item.__cause__ or item.__context__
    return False


def _tls_error(exc: Exception) -> bool:
    """Whether `exc` says the TLS settings do not fit the server (retrying cannot help)."""
    import ssl

    from nats.errors import SecureConnFailedError, SecureConnRequiredError, SecureConnWantedError

    return isinstance(exc, (ssl.SSLError, SecureConnFailedError, SecureConnRequiredError, SecureConnWantedError))


@dataclass(frozen=True)
class Credentials:
    """Who a connection is: its identity (inbox prefix `_INBOX_<identity>`), its nkey seed file, and the
    TLS files for `tls://` servers.

    Attributes:
        identity: the identity of the permission table ("api", …, "events"); None: the default inbox.
        nkey_file: file holding the identity's nkey seed; None connects without credentials.
        tls_ca_file: CA certificate the server's certificate is checked against.
        tls_cert_file: client certificate (mutual TLS), with `tls_key_file`.
        tls_key_file: the client certificate's key.
    """

    identity: str | None = None
    nkey_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def connect_options(self) -> dict[str, object]:
        """The options of `nats.connect` these credentials add."""
        opts: dict[str, object] = {}
        if self.identity is not None:
            opts["inbox_prefix"] = inbox_prefix(self.identity)
        if self.nkey_file is not None:
            opts["nkeys_seed"] = str(self.nkey_file)
        if self.tls_ca_file is not None or self.tls_cert_file is not None:
            import ssl

            ctx = ssl.create_default_context(cafile=str(self.tls_ca_file) if self.tls_ca_file else None)
            if self.tls_cert_file is not None:
                ctx.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file) if self.tls_key_file else None)
            opts["tls"] = ctx
        return opts


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
        ping_interval: seconds between pings of the server (set before `connect`): a server that answers
            none of three is taken for gone. `fleethub up`, whose NATS is its own child on loopback (a dead
            server closes the socket at once), pings rarely.
        idle_fetch: seconds a durable consumer's pull waits on the server while nothing comes (a stop or a
            reconnect ends it early). Short by default: a hung process's pending pull would take a message
            that a live replica of the same durable could handle; `fleethub up` (one replica of each) waits long.
        on_lost: instead of SIGTERM, what `exit_on_close` calls (a service hosted by `fleethub up` beside others
            stops alone, and the host starts it again).
        exit_on_close: a service process sets it: a connection closed for good (not by `close()`) then
            stops the process (SIGTERM to itself, the graceful path) so that its supervisor starts it
            afresh. With unlimited reconnects nats-py closes only on errors a reconnect cannot mend.
    """

    def __init__(self, servers: str, name: str, credentials: Credentials | None = None) -> None:
        self.servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.name = name
        self.credentials = credentials or Credentials()
        self.healthy = asyncio.Event()
        self.reconnected = asyncio.Event()
        self.on_reconnect: list[Callable[[], None]] = []
        self.closed = asyncio.Event()
        self.exit_on_close = False
        self.on_lost: Callable[[], None] | None = None
        self.ping_interval = 2  # seconds (nats-py takes whole ones)
        self.idle_fetch = 1.0
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        self._refused = asyncio.Event()
        self._refusal = ""

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
        text = str(exc).lower()
        if "authorization violation" in text or _tls_error(exc):
            what = "credentials" if "authorization" in text else "TLS settings"
            log.error("NATS refused the %s of %s: %s", what, self.credentials.identity or "an anonymous client", exc)
            if self._nc is None:  # still connecting: nats-py would retry forever; `connect` gives up
                self._refusal = f"{what} refused: {exc or type(exc).__name__}"
                self._refused.set()
        elif "permissions violation" in text:
            # the server refused a publish or subscription (the message names the subject): a bug in the
            # permission table, or a compromised process trying what it may not
            log.error("nats refused (%s): %s", self.credentials.identity or "no identity", exc)
        else:
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
            log.error("nats connection closed for good")
            if self.exit_on_close and self.on_lost is not None:
                log.error("stopping this service: it cannot work without the bus (its host restarts it)")
                self.on_lost()
            elif self.exit_on_close:
                log.error("stopping this process: it cannot work without the bus (its supervisor restarts it)")
                os.kill(os.getpid(), signal.SIGTERM)

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, retrying until `timeout`; afterwards reconnect forever.

        Raises:
            BusError: no server answered within `timeout`.
        """
        global _warned_anonymous
        if self.credentials.nkey_file is None and not _warned_anonymous:
            _warned_anonymous = True
            log.warning("connecting to NATS without credentials (no nats_nkey_file): any client of that server "
                        "may read and write every subject")
        options = self.credentials.connect_options()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                self._nc = await self._open(options)
                break
            except BusError:
                raise
            except Exception as exc:  # nats raises several unrelated types for "not there yet"
                if asyncio.get_running_loop().time() > deadline:
                    raise BusError(f"cannot connect to NATS at {','.join(self.servers)}: {exc}") from None
                await asyncio.sleep(0.2)
        self._js = self._nc.jetstream(timeout=5)
        self.healthy.set()

    async def _open(self, options: dict[str, object]) -> NatsClient:
        """One `nats.connect`, abandoned (BusError) as soon as the server refuses the credentials."""
        self._refused.clear()
        attempt = asyncio.ensure_future(nats.connect(
            servers=self.servers,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            ping_interval=self.ping_interval,
            max_outstanding_pings=3,
            connect_timeout=2,
            allow_reconnect=True,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
            **options,
        ))
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait({attempt, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if attempt.done():
            return attempt.result()
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        raise BusError(f"cannot connect to NATS at {','.join(self.servers)} as "
                       f"{self.credentials.identity or 'an anonymous client'}: {self._refusal} "
                       "(nats_nkey_file, nats_tls_* settings)")

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
