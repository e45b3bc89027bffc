"""A TCP relay the test controls, put between one service and NATS or PostgreSQL to partition that link.

Usage::

    relay = Relay("127.0.0.1", nats_port)          # or Relay.for_url(nats_url)
    await relay.start()                            # listens on a free 127.0.0.1 port: relay.port
    proc = stack.start("spawner", nats_url=relay.url_for(nats_url))   # only this replica goes through it
    # PostgreSQL: Relay.for_url(stack.settings.database_url), database_url=relay.url_for(stack.settings.database_url)
    relay.blackhole()      # a partition: nothing forwarded either way, every socket kept open
    relay.heal()           # forwarding resumes (what was held is delivered, as TCP retransmits it)
    relay.reset()          # close every connection now (the peers see a reset); new ones are accepted
    relay.latency(0.2)     # each chunk delivered 0.2 s after it was read (0 turns it off)
    await relay.close()    # stop listening, close everything

While blackholed, new connections are accepted (the kernel completes the handshake) but not connected
upstream until `heal()`: a client sees a connection that never answers, as behind a dropped route.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

CHUNK = 65536


def _plain(url: str | SecretStr) -> str:
    return url.get_secret_value() if isinstance(url, SecretStr) else url


class _Link:
    """One client connection and its upstream: two pumps, each through a delay queue."""

    def __init__(self, relay: Relay, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.relay = relay
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def run(self) -> None:
        try:
            await self.relay._flowing.wait()
            if self.closed:  # reset while it waited for a heal
                return
            self.upstream = await asyncio.open_connection(self.relay.target_host, self.relay.target_port)
        except OSError:
            self.abort()
            return
        up_reader, up_writer = self.upstream
        self.tasks = [asyncio.create_task(self._pump(self.client[0], up_writer)),
                      asyncio.create_task(self._pump(up_reader, self.client[1]))]
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while True:
                await self.relay._flowing.wait()  # blackholed: stop reading, the peer's buffers fill
                data = await reader.read(CHUNK)
                if not data:
                    break
                queue.put_nowait((time.monotonic() + self.relay._delay, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(Exception):
                await sender
            self.abort()

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.relay._flowing.wait()
            writer.write(data)
            await writer.drain()

    def abort(self) -> None:
        """Close both sides at once (a reset, not a graceful close)."""
        self.closed = True
        for pair in (self.client, self.upstream):
            if pair is not None:
                pair[1].transport.abort()
        for task in self.tasks:
            task.cancel()
        self.relay._links.discard(self)


class Relay:
    """Forwards every connection made to `127.0.0.1:<port>` to `target_host:target_port`, under control."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._delay = 0.0
        self.accepted = 0

    @classmethod
    def for_url(cls, url: str | SecretStr) -> Relay:
        """A relay to the host and port of `url` (nats://…, postgresql+asyncpg://user:pw@host:port/db; a
        settings secret such as `settings.database_url` is fine)."""
        parts = urlsplit(_plain(url).split(",")[0])
        return cls(parts.hostname or "127.0.0.1", parts.port or 0)

    def url_for(self, url: str | SecretStr) -> str:
        """`url` with its host and port replaced by the relay's (credentials, path and query kept)."""
        parts = urlsplit(_plain(url).split(",")[0])
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def start(self) -> Relay:
        """Listen on a free 127.0.0.1 port (`self.port`); returns self."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(self, reader, writer)
        self._links.add(link)
        await link.run()

    @property
    def connections(self) -> int:
        """Connections open through the relay now."""
        return len(self._links)

    @property
    def blackholed(self) -> bool:
        """Whether forwarding is stopped."""
        return not self._flowing.is_set()

    def blackhole(self) -> None:
        """Stop forwarding both ways; sockets stay open (a partition, not a crash)."""
        self._flowing.clear()

    def heal(self) -> None:
        """Forward again."""
        self._flowing.set()

    def reset(self) -> None:
        """Close every open connection now; the relay keeps accepting new ones."""
        for link in list(self._links):
            link.abort()

    def latency(self, seconds: float) -> None:
        """Deliver each chunk `seconds` after it was read, both ways (0: none)."""
        self._delay = max(0.0, seconds)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        self.heal()
        self.reset()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> Relay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
