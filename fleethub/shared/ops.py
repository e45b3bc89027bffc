"""Liveness, readiness and the operations listener of a service process.

Liveness (`/health/live`) is the process's event loop answering: 200 whenever it answers at all.
Readiness (`/health/ready`) is 200 only when every check of the service's `Readiness` passes (the database
and the bus reachable, its durable consumers bound, for a proxy node its route table loaded), else 503
with a JSON body naming what is missing. The operations listener is a small HTTP/1.0-style server of its
own (`[ops.<service>]`), for the processes whose port serves users (proxy) or that have none (spawner,
culler); it serves `/metrics` too. It is unauthenticated: bind it where only the scraper and probes reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleethub.shared.metrics import Metrics
    from fleethub.shared.ops_settings import OpsListen

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0  # seconds one readiness check may take before it counts as failed
READ_TIMEOUT = 5.0  # seconds a client of the operations listener has to send its request head
HEAD_LIMIT = 8192

Check = Callable[[], Awaitable[bool]]

NAMES = {"database": "the database (PostgreSQL)", "bus": "the message bus (NATS)",
         "route_table": "the route table (not loaded yet)"}


class Readiness:
    """The named checks that decide whether a service is ready; each answers True (ok) or False (missing).

    Args:
        consumers: the durable consumers of the service by name, each with the event set while it is bound
            (`Bus.consumers`); read at every report, so consumers started later count too.
    """

    def __init__(self, consumers: dict[str, asyncio.Event] | None = None) -> None:
        self.checks: dict[str, Check] = {}
        self.consumers = consumers if consumers is not None else {}

    def add(self, name: str, check: Check) -> None:
        """Require `check` under `name` (`consumer:<durable>` for a durable consumer)."""
        self.checks[name] = check

    def add_event(self, name: str, event: asyncio.Event) -> None:
        """Require `event` to be set (a consumer bound, a table loaded)."""

        async def is_set() -> bool:
            return event.is_set()

        self.add(name, is_set)

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """Whether the service is ready, and the JSON body saying so (or naming what is missing)."""

        async def run(check: Check) -> bool:
            try:
                async with asyncio.timeout(CHECK_TIMEOUT):
                    return await check()
            except Exception:
                return False

        results = await asyncio.gather(*(run(c) for c in self.checks.values()))
        states = {name: "ok" if ok else "missing" for name, ok in zip(self.checks, results, strict=True)}
        for durable, bound in sorted(self.consumers.items()):
            states[f"consumer:{durable}"] = "ok" if bound.is_set() else "missing"
        missing = [name for name, state in states.items() if state != "ok"]
        if not missing:
            return True, {"status": "ready", "checks": states}
        named = ", ".join(_describe(name) for name in missing)
        return False, {"status": "not ready", "checks": states, "missing": missing,
                       "message": f"not ready: {named}"}


def _describe(name: str) -> str:
    if name.startswith("consumer:"):
        return f"the durable consumer {name.removeprefix('consumer:')} (not bound)"
    return NAMES.get(name, name)


LIVE = {"status": "ok"}


async def answer(path: str, metrics: Metrics, readiness: Readiness) -> tuple[int, str, bytes]:
    """The status, content type and body of the operations path `path` (404 JSON for any other)."""
    from fleethub.shared.metrics import CONTENT_TYPE

    if path == "/metrics":
        return 200, CONTENT_TYPE, await metrics.exposition()
    if path == "/health/live":
        return 200, "application/json", json.dumps(LIVE).encode()
    if path == "/health/ready":
        ready, body = await readiness.report()
        return (200 if ready else 503), "application/json", json.dumps(body).encode()
    message = {"status": 404, "message": f"no such path {path!r}: this listener serves /metrics, /health/live "
                                         "and /health/ready"}
    return 404, "application/json", json.dumps(message).encode()


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, metrics: Metrics,
                     readiness: Readiness) -> None:
    try:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            status, ctype, body = 400, "application/json", b'{"status": 400, "message": "malformed request line"}'
        elif parts[0] not in ("GET", "HEAD"):
            status, ctype = 405, "application/json"
            body = json.dumps({"status": 405, "message": f"method {parts[0]} not allowed: GET only"}).encode()
        else:
            status, ctype, body = await answer(parts[1].split("?", 1)[0], metrics, readiness)
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}", f"Content-Type: {ctype}",
                 f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + (b"" if parts[0] == "HEAD" else body))
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def ops_listener(listen: OpsListen | None, metrics: Metrics, readiness: Readiness,
                       port_offset: int = 0) -> AsyncIterator[int | None]:
    """Serve the operations paths on `listen` (None, or no port: nothing) for the life of the block; yields
    the bound port (None when off).

    Raises:
        ConfigError: the address can not be bound, naming it.
    """
    if listen is None or listen.port is None:
        yield None
        return
    from fleethub.shared.service import bind_socket

    port = listen.port + port_offset if listen.port else 0
    sock = bind_socket(listen.host, port)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_one(reader, writer, metrics, readiness)

    server = await asyncio.start_server(on_client, sock=sock, limit=HEAD_LIMIT)
    bound = int(sock.getsockname()[1])
    log.info("operations listener on %s:%d (/metrics, /health/live, /health/ready)", listen.host, bound)
    try:
        yield bound
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
