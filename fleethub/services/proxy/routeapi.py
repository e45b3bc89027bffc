"""The route API of configurable-http-proxy (CHP), served by every worker of a node from its own table.

`GET/POST/DELETE /api/routes[/<path>]` with `Authorization: token <token>`, as CHP answers them, so
a classic JupyterHub (`ConfigurableHTTPProxy.should_start = False`) and other CHP clients can use a
fleethub proxy cluster. Routes are read from the worker's table and written to the route bucket:
a write is answered once this worker serves it (every other node follows within milliseconds), so
a client that adds a route and then sends a user there finds it.

Paths are CHP's: a leading slash and no trailing one (`/user/alice`; `/` is the catch-all). A path
maps to the bucket key `path.<segment>.<segment>…` (each segment encoded as in `fleethub.shared.names`). A
path already routed under another key (a user server's `user.<name>.<server>`, written by the spawner) is
refused with 403: a proxy's NATS identity may write only `path` keys (`fleethub.shared.bus.permissions`).
`last_activity` is the newest request seen on the route by any node (from the activity batches on the
bus), or when the route was written.

A small HTTP/1.1 server on httptools (keep-alive, one request at a time per connection), like the
proxy's data path: the API's cost is the KV write, not a framework.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qs, unquote

import httptools

from fleethub.services.proxy import replies
from fleethub.services.proxy.entries import check_origin, check_route
from fleethub.services.proxy.node import Node
from fleethub.services.proxy.table import RouteTable, Target, parse_origin, prefix_of
from fleethub.shared.bus import Bus
from fleethub.shared.events import Route
from fleethub.shared.names import encode_token

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_PATH = 1024
APPLY_WAIT = 2.0  # how long a write waits to be served by this worker before it is answered anyway
_TOKEN = re.compile(rb"token\s+(\S+)", re.IGNORECASE)


class ApiError(Exception):
    """An error answer: `status` with a JSON `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def chp_path(routespec: str) -> str:
    """A routespec as CHP shows it: `/user/alice/` → `/user/alice`; `/` stays `/`."""
    return prefix_of(routespec)


def path_key(path: str) -> str:
    """The bucket key of a route added by CHP path: `/user/alice` → `path.user.alice`, `/` → `path`."""
    segments = [s for s in path.split("/") if s]
    return ".".join(["path", *(encode_token(s) for s in segments)])


def _check_own(key: str, routespec: str) -> None:
    """Refuse to change a route the hub owns (a user server's or a service's): only the spawner writes
    those, and a proxy's NATS identity may not."""
    if key != "path" and not key.startswith("path."):
        raise ApiError(403, f"{routespec[:200]} is routed by the hub itself; only the hub changes that route")


def iso(ts: float) -> str:
    """Epoch seconds as CHP writes dates: ISO 8601 in UTC with milliseconds and `Z`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def parse_since(value: str) -> float:
    """An `inactive_since` timestamp (ISO 8601; naive means UTC) in epoch seconds.

    Raises:
        ApiError: 400 when it is not ISO 8601.
    """
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ApiError(400, f"Invalid datestamp {value[:100]!r} must be ISO8601.") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class RouteApi:
    """The route API's logic, over one worker's node and the bus."""

    def __init__(self, node: Node, bus: Bus, token: str) -> None:
        if not token:
            raise ValueError("the route API needs a token")
        self.node = node
        self.bus = bus
        self.token = token.encode()

    def authorized(self, header: bytes | None) -> bool:
        """Whether `Authorization` carries the API token (compared in constant time)."""
        match = _TOKEN.search(header or b"")
        return match is not None and hmac.compare_digest(match.group(1), self.token)

    def route_model(self, target: Target) -> dict[str, Any]:
        """A route as CHP returns it: its data, `target` and `last_activity`."""
        return {**target.data, "target": target.target, "last_activity": iso(self.node.last_activity(target))}

    def _table(self) -> RouteTable:
        table = self.node.table
        if table is None:
            raise ApiError(503, "The proxy is loading its route table; try again in a moment.")
        return table

    async def handle(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        """Answer one API request (already authorized): status and JSON document (None: no body).

        Raises:
            ApiError: a 4xx/5xx answer.
        """
        if path != "/api/routes" and not path.startswith("/api/routes/"):
            raise ApiError(404, "Not found: the API serves /api/routes")
        route_path = unquote(path[len("/api/routes"):], errors="strict") or "/"
        if len(route_path) > MAX_PATH:
            raise ApiError(400, f"Route paths are limited to {MAX_PATH} characters")
        if method == "GET":
            return self.get(route_path, query)
        if method == "POST":
            return await self.post(route_path, body)
        if method == "DELETE":
            return await self.delete(route_path)
        raise ApiError(405, "Method not supported")

    def get(self, path: str, query: str) -> tuple[int, Any]:
        table = self._table()
        if path != "/":
            target = table.at_prefix(path)
            if target is None:
                raise ApiError(404, f"No route for {path[:200]}")
            return 200, self.route_model(target)
        params = parse_qs(query, keep_blank_values=True)
        since_values = params.get("inactiveSince") or params.get("inactive_since")
        since = parse_since(since_values[0]) if since_values and since_values[0] else None
        out: dict[str, Any] = {}
        for target in table:
            if since is None or self.node.last_activity(target) < since:
                out[chp_path(target.routespec)] = self.route_model(target)
        return 200, out

    async def post(self, path: str, body: bytes) -> tuple[int, Any]:
        try:
            data = json.loads(body or b"{}") or {}
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, f"Body not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(data, dict) or not isinstance(data.get("target"), str):
            raise ApiError(400, "Must specify 'target' as string")
        target = data.pop("target")
        data.pop("last_activity", None)  # kept by the proxy, not by the client
        try:
            parse_origin(target)
            check_origin(target)
        except ValueError as exc:
            raise ApiError(400, f"Bad target: {exc} (only an origin, http://host:port, is supported)") from None
        table = self._table()
        routespec = "/" if path == "/" else prefix_of(path) + "/"
        existing = table.at_prefix(routespec)
        key = existing.key if existing is not None else path_key(path)
        _check_own(key, routespec)
        route = Route(routespec=routespec, target=target, data=data)
        try:
            check_route(key, route)  # what every node will check before serving it
        except ValueError as exc:
            raise ApiError(400, f"Bad route path: {exc}") from None
        await self.bus.routes.put(key, route)

        def served(t: RouteTable) -> bool:
            now = t.get(key)
            return now is not None and now.target == target and now.data == data and now.routespec == routespec

        await self.node.wait_routes(served, APPLY_WAIT)
        return 201, None

    async def delete(self, path: str) -> tuple[int, Any]:
        existing = self._table().at_prefix(path)
        if existing is None:
            raise ApiError(404, f"No route for {path[:200]}")
        key = existing.key
        _check_own(key, existing.routespec)
        await self.bus.routes.delete(key)
        await self.node.wait_routes(lambda t: t.get(key) is None, APPLY_WAIT)
        return 204, None


def _response(status: int, doc: Any, *, close: bool) -> bytes:
    return replies.json_body(status, None if doc is None else json.dumps(doc).encode(), close=close)


class ApiConnection(asyncio.Protocol):
    """One client connection of the route API; requests are answered in order."""

    def __init__(self, api: RouteApi) -> None:
        self.api = api
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[str, bytes, bytes | None, bytes, bool] | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self._url = b""
        self._auth: bytes | None = None
        self._body = bytearray()
        self._too_large = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._send(_response(400, {"status": 400, "message": f"Bad request: {exc}"}, close=True), close=True)

    # parser callbacks

    def on_message_begin(self) -> None:
        self._url, self._auth, self._too_large = b"", None, False
        self._body.clear()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self._auth = value

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > MAX_BODY:
            self._too_large = True
        else:
            self._body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        keep = self.parser.should_keep_alive()
        body = b"" if self._too_large else bytes(self._body)
        if self._too_large:
            method = "TOO_LARGE"
        self.queue.put_nowait((method, self._url, self._auth, body, keep))
        if not keep and self.transport is not None:
            self.transport.pause_reading()

    async def _serve(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            method, url, auth, body, keep = item
            status, doc = await self._answer(method, url, auth, body)
            self._send(_response(status, doc, close=not keep), close=not keep)
            if not keep:
                return

    async def _answer(self, method: str, url: bytes, auth: bytes | None, body: bytes) -> tuple[int, Any]:
        path, _, query = url.decode("latin-1").partition("?")
        try:
            if method == "TOO_LARGE":
                raise ApiError(413, f"Request bodies are limited to {MAX_BODY} bytes")
            if not self.api.authorized(auth):
                raise ApiError(403, "A valid 'Authorization: token <token>' header is required")
            return await self.api.handle(method, path, query, body)
        except ApiError as exc:
            return exc.status, {"status": exc.status, "message": exc.message}
        except UnicodeDecodeError:
            return 400, {"status": 400, "message": "The path is not valid UTF-8 once percent-decoded"}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # NATS away or failing: the write did not happen
            log.warning("route API %s %s failed: %r", method, path[:200], exc)
            return 503, {"status": 503, "message": "The route store is unavailable; try again shortly."}

    def _send(self, data: bytes, *, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if close:
            self.transport.close()
