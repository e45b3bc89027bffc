"""Following spawns: server events seen live on the bus, PostgreSQL as the fallback.

One core subscription per process hands every `server.*` event to the listeners of its spawn id (a
start or stop request waiting for its outcome, a progress stream). A listener is registered before
its owner reads the database, so an event is either in what it reads or in its queue; an event
missed by the subscription itself (at-most-once, e.g. across a reconnect) is caught by polling
`server_states`.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import TracebackType
from typing import Self

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleethub.shared.db.models import ServerState
from fleethub.shared.events import Envelope, Message, ServerEvent, ServerFailed, ServerReady, ServerStopped

OUTCOME: dict[type[ServerEvent], str] = {ServerReady: "ready", ServerFailed: "failed", ServerStopped: "stopped"}
_STATUS_OUTCOME = {"running": "ready", "failed": "failed", "stopped": "stopped"}
POLL = 0.5
# progress events of one spawn are few; a listener that stops reading loses progress, never an outcome
_MAX_QUEUED = 256


def outcome_of(message: ServerEvent) -> tuple[str, str] | None:
    """("ready" | "failed" | "stopped", message) for an outcome event, None for progress."""
    outcome = OUTCOME.get(type(message))
    if outcome is None:
        return None
    return outcome, message.message if isinstance(message, ServerFailed) else ""


class Listener:
    """The events of one spawn, from registration until `close()` (also a context manager)."""

    def __init__(self, waiters: Waiters, spawn_id: str) -> None:
        self.spawn_id = spawn_id
        self._waiters = waiters
        self._queue: asyncio.Queue[ServerEvent] = asyncio.Queue()
        self._closed = False

    def put(self, message: ServerEvent) -> None:
        if self._queue.qsize() < _MAX_QUEUED or outcome_of(message) is not None:
            self._queue.put_nowait(message)

    async def get(self, timeout: float) -> ServerEvent | None:
        """The next event, or None after `timeout` seconds."""
        try:
            return await asyncio.wait_for(self._queue.get(), max(timeout, 0))
        except TimeoutError:
            return None

    def close(self) -> None:
        """Stop receiving (idempotent)."""
        if not self._closed:
            self._closed = True
            self._waiters._remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Waiters:
    """Listeners keyed by spawn id, fed by the api's one core subscription to server events."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._listeners: dict[str, set[Listener]] = defaultdict(set)

    async def on_event(self, envelope: Envelope, message: Message) -> None:
        if not isinstance(message, ServerEvent):
            return
        for listener in tuple(self._listeners.get(message.spawn_id, ())):
            listener.put(message)

    def listen(self, spawn_id: str) -> Listener:
        """Start receiving the events of `spawn_id`; the caller must `close()` the listener."""
        listener = Listener(self, spawn_id)
        self._listeners[spawn_id].add(listener)
        return listener

    def _remove(self, listener: Listener) -> None:
        listeners = self._listeners.get(listener.spawn_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.spawn_id]

    @property
    def listening(self) -> int:
        """How many listeners are registered (for tests and metrics)."""
        return sum(len(v) for v in self._listeners.values())

    async def outcome(self, spawn_id: str) -> tuple[str, str] | None:
        """The recorded outcome of `spawn_id` ("ready" | "failed" | "stopped", message), if any yet."""
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
        with self.listen(spawn_id) as events:  # before the read: an outcome is in one or the other
            while True:
                current = await self.outcome(spawn_id)
                if current is not None and current[0] in wanted:
                    return current
                now = loop.time()
                if now >= deadline:
                    return None
                poll_at = min(now + POLL, deadline)
                while (remaining := poll_at - loop.time()) > 0:
                    message = await events.get(remaining)
                    seen = outcome_of(message) if message is not None else None
                    if seen is not None and seen[0] in wanted:
                        return seen
