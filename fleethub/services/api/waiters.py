"""Following spawns: server events seen live on the bus, PostgreSQL as the fallback.

One core subscription per process hands every `server.*` event to the listeners of its spawn id (a
start or stop request waiting for its outcome, a progress stream). A listener is registered before
its owner reads the database, so an event is either in what it reads or in its queue; an event
missed by the subscription itself (at-most-once, e.g. across a reconnect) is caught by polling
`server_states`.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict, defaultdict
from collections.abc import Collection
from types import TracebackType
from typing import NamedTuple, Self

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleethub.shared.db.models import ServerState
from fleethub.shared.db.outage import database_unavailable
from fleethub.shared.events import (
    Envelope,
    Message,
    ServerEvent,
    ServerFailed,
    ServerProgress,
    ServerReady,
    ServerStopped,
)
from fleethub.shared.lifecycle import ServerStatus


class Outcome(enum.Enum):
    """How a spawn a request waits for came out. Not a `ServerStatus`: it is what an event announced (ready
    is reaching `running`, not staying there), and a waiter asks only for these three."""

    READY = enum.auto()
    FAILED = enum.auto()
    STOPPED = enum.auto()


class Result(NamedTuple):
    """An outcome and its message (why a spawn failed; empty otherwise)."""

    outcome: Outcome
    message: str


OUTCOME: dict[type[ServerEvent], Outcome] = {ServerReady: Outcome.READY, ServerFailed: Outcome.FAILED,
                                             ServerStopped: Outcome.STOPPED}
# the statuses a recorded outcome leaves in `server_states`
_STATUS_OUTCOME = {ServerStatus.RUNNING: Outcome.READY, ServerStatus.FAILED: Outcome.FAILED,
                   ServerStatus.STOPPED: Outcome.STOPPED}
POLL = 0.5  # the first fallback read of PostgreSQL; each next one waits twice as long, up to POLL_MAX
POLL_MAX = 2.0  # an event lost by the core subscription costs at most this; a storm's waiters read less
# progress events of one spawn are few; a listener that stops reading loses progress, never an outcome
_MAX_QUEUED = 256
# the spawn-pending page's memory of progress: the last steps of the spawns this replica saw start
_PROGRESS_SPAWNS = 4096
_PROGRESS_STEPS = 20


class Step(NamedTuple):
    """One progress event of a spawn, as the spawn-pending page and a progress stream replay it."""

    progress: int
    message: str


def outcome_of(message: ServerEvent) -> Result | None:
    """The result an outcome event announces, None for progress."""
    outcome = OUTCOME.get(type(message))
    if outcome is None:
        return None
    return Result(outcome, message.message if isinstance(message, ServerFailed) else "")


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
        self._progress: OrderedDict[str, list[Step]] = OrderedDict()

    async def on_event(self, envelope: Envelope, message: Message) -> None:
        if not isinstance(message, ServerEvent):
            return
        self._note_progress(message)
        for listener in tuple(self._listeners.get(message.spawn_id, ())):
            listener.put(message)

    def _note_progress(self, message: ServerEvent) -> None:
        if isinstance(message, ServerProgress):
            steps = self._progress.setdefault(message.spawn_id, [])
            self._progress.move_to_end(message.spawn_id)
            if message.message and all(message.message != step.message for step in steps[-1:]):
                steps.append(Step(message.progress, message.message))
                del steps[:-_PROGRESS_STEPS]
            while len(self._progress) > _PROGRESS_SPAWNS:
                self._progress.popitem(last=False)
        elif outcome_of(message) is not None:
            self._progress.pop(message.spawn_id, None)

    def steps(self, spawn_id: str) -> list[Step]:
        """The progress of `spawn_id` this replica has seen, oldest first (its core subscription sees every
        spawn's; empty once an outcome arrived, or for a spawn that began before it started)."""
        return list(self._progress.get(spawn_id, ()))

    def progress(self, spawn_id: str) -> list[str]:
        """The messages of `steps(spawn_id)`."""
        return [step.message for step in self._progress.get(spawn_id, ())]

    def percent(self, spawn_id: str) -> int:
        """How far `spawn_id` went by `steps(spawn_id)` (0-100; 0 when none)."""
        return max((step.progress for step in self._progress.get(spawn_id, ())), default=0)

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

    async def outcome(self, spawn_id: str) -> Result | None:
        """The recorded outcome of `spawn_id`, if any yet (None while PostgreSQL is away: a request whose
        start or stop is committed answers 202 then, not 503; events still arrive meanwhile)."""
        try:
            async with self._sessions() as session:
                row = (await session.execute(
                    select(ServerState.status, ServerState.message).where(ServerState.spawn_id == spawn_id)
                )).first()
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            return None
        if row is None:
            return None
        outcome = _STATUS_OUTCOME.get(ServerStatus(row[0]))
        return Result(outcome, row[1] or "") if outcome is not None else None

    async def wait(self, spawn_id: str, wanted: Collection[Outcome], timeout: float) -> Result | None:
        """The outcome of `spawn_id` if it is one of `wanted` within `timeout` seconds, else None."""
        if timeout <= 0:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        poll = POLL
        with self.listen(spawn_id) as events:  # before the read: an outcome is in one or the other
            while True:
                current = await self.outcome(spawn_id)
                if current is not None and current.outcome in wanted:
                    return current
                now = loop.time()
                if now >= deadline:
                    return None
                poll_at = min(now + poll, deadline)
                poll = min(poll * 2, POLL_MAX)
                while (remaining := poll_at - loop.time()) > 0:
                    message = await events.get(remaining)
                    seen = outcome_of(message) if message is not None else None
                    if seen is not None and seen.outcome in wanted:
                        return seen
