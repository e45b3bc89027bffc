"""Playing the spawner in api tests (its actual-state rows), a second api replica, and an ASGI client
that reads a streamed response chunk by chunk and can hang up (httpx's ASGI transport buffers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.dialects.postgresql import insert

from fleethub.services.api.app import create_app
from fleethub.shared.db.models import ServerState
from fleethub.shared.events import utcnow
from tests.support.hub import BASE_URL, Hub, _with_state


async def mark(hub: Hub, user: str, server: str, spawn_id: str, status: str, message: str = "",
               started: bool = True) -> None:
    """Write the spawner's actual state, as a worker does before it publishes the event."""
    values = {"spawn_id": spawn_id, "status": status, "message": message, "url": f"/user/{user}/",
              "target": "http://127.0.0.1:1", "started": utcnow() if started else None}
    async with hub.sessions() as s, s.begin():
        await s.execute(insert(ServerState).values(user_name=user, server_name=server, **values)
                        .on_conflict_do_update(index_elements=["user_name", "server_name"], set_=values))


@contextlib.asynccontextmanager
async def replica(hub: Hub) -> AsyncIterator[tuple[Any, dict[str, Any], httpx.AsyncClient]]:
    """Another api replica of `hub`: its ASGI app, its lifespan state and a client."""
    app = create_app(hub.settings)
    async with app.router.lifespan_context(app) as state:
        asgi = _with_state(app, state)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url=BASE_URL) as client:
            yield asgi, dict(state or {}), client


class Streamed:
    """One GET to an ASGI app whose response body is read as it is sent; `hang_up()` disconnects."""

    def __init__(self, app: Any, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": parts.path, "raw_path": parts.path.encode(), "query_string": parts.query.encode(),
            "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
            "headers": [(b"host", b"127.0.0.1:8000"),
                        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())],
        }
        self._sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._asked = False
        self.task = asyncio.create_task(app(scope, self._receive, self._sent.put))
        self.status = 0
        self.headers: dict[str, str] = {}
        self.ended = False
        self._buffer = b""

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def start(self, timeout: float = 5) -> int:
        """Wait for the status line; returns the status."""
        message = await asyncio.wait_for(self._sent.get(), timeout)
        assert message["type"] == "http.response.start", message
        self.status = message["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        return self.status

    async def chunk(self, timeout: float = 5) -> bytes:
        """The next body chunk (b"" once the response ended)."""
        if self.ended:
            return b""
        message = await asyncio.wait_for(self._sent.get(), timeout)
        assert message["type"] == "http.response.body", message
        self.ended = not message.get("more_body", False)
        body: bytes = message.get("body", b"")
        return body

    async def event(self, timeout: float = 5) -> dict[str, Any] | None:
        """The next `data:` event, skipping keep-alives; None once the response ended."""
        while b"\n\n" not in self._buffer.lstrip(b"\n"):
            if self.ended:
                return None
            self._buffer += await self.chunk(timeout)
        self._buffer = self._buffer.lstrip(b"\n")
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        assert raw.startswith(b"data: "), raw
        event: dict[str, Any] = json.loads(raw[len(b"data: "):])
        return event

    async def hang_up(self, timeout: float = 5) -> None:
        """Disconnect and wait for the app to return."""
        self._gone.set()
        await asyncio.wait_for(self.task, timeout)
