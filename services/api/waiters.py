"""Waiting for a spawn or stop outcome: server events seen live on the bus, PostgreSQL as the fallback.

One core subscription per process dispatches `server.*` events to the requests waiting on them; a
missed message (the subscription is at-most-once) is caught by polling `server_states`.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.models import ServerState
from shared.events import Envelope, Message, ServerEvent, ServerFailed, ServerReady, ServerStopped

OUTCOME = {ServerReady: "ready", ServerFailed: "failed", ServerStopped: "stopped"}
_STATUS_OUTCOME = {"running": "ready", "failed": "failed", "stopped": "stopped"}
POLL = 0.5


class Waiters:
    """Futures keyed by spawn id, resolved with ("ready" | "failed" | "stopped", message)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._waiting: dict[str, list[asyncio.Future[tuple[str, str]]]] = defaultdict(list)

    async def on_event(self, envelope: Envelope, message: Message) -> None:
        outcome = OUTCOME.get(type(message))
        if outcome is None or not isinstance(message, ServerEvent):
            return
        text = message.message if isinstance(message, ServerFailed) else ""
        for fut in self._waiting.pop(message.spawn_id, []):
            if not fut.done():
                fut.set_result((outcome, text))

    async def _status(self, spawn_id: str) -> tuple[str, str] | None:
        async with self._sessions() as session:
            row = (await session.execute(
                select(ServerState.status, ServerState.message).where(ServerState.spawn_id == spawn_id)
            )).first()
        if row is None or row[0] not in _STATUS_OUTCOME:
            return None
        return _STATUS_OUTCOME[row[0]], row[1] or ""

    async def wait(self, spawn_id: str, wanted: set[str], timeout: float) -> tuple[str, str] | None:
        """The outcome of `spawn_id` if it is one of `wanted` within `timeout` seconds, else None."""
        if timeout <= 0:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            current = await self._status(spawn_id)
            if current is not None and current[0] in wanted:
                return current
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            fut: asyncio.Future[tuple[str, str]] = loop.create_future()
            self._waiting[spawn_id].append(fut)
            try:
                result = await asyncio.wait_for(asyncio.shield(fut), min(POLL, remaining))
                if result[0] in wanted:
                    return result
            except TimeoutError:
                pass
            finally:
                waiting = self._waiting.get(spawn_id)
                if waiting and fut in waiting:
                    waiting.remove(fut)
                    if not waiting:
                        del self._waiting[spawn_id]
