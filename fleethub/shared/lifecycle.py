"""A server's life in one vocabulary: its statuses, the moves between them, and the one function that makes a move.

The api (and the culler, to stop an idle server) records what a server should be (`servers.desired`, a
`DesiredState`) with a `Request`; the spawner records what it is (`server_states.status`, a `ServerStatus`)
with a `Transition`. Both go through `transition`: one conditional SQL statement (a `Transition` on the
row's spawn, its lease and its expected status; a `Request` on the row's spawn and its expected desired
state), what it announces (events, or the command for the spawner) enqueued in the same transaction only
when the row moved, and the outbox relay woken once that transaction commits. The values are `StrEnum`s,
so what PostgreSQL stores and events and JSON carry stays the plain strings.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

from sqlalchemy import and_, event, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from fleethub.shared.events import Message, ServerFailed, ServerReady, ServerStopped, SpawnServer, StopServer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

    from fleethub.shared.db.models import Server, ServerState, User


class ServerStatus(enum.StrEnum):
    """A server's actual status (`server_states.status`, written by the spawner)."""

    PENDING = "pending"  # a worker claimed the spawn and is starting it
    RUNNING = "running"  # it answers HTTP and is routed
    STOPPING = "stopping"  # a worker is stopping it
    STOPPED = "stopped"  # it stopped, exited, or was stopped before it started (a tombstone)
    FAILED = "failed"  # it did not start


class DesiredState(enum.StrEnum):
    """What the api wants a server to be (`servers.desired`)."""

    RUNNING = "running"
    STOPPED = "stopped"


ACTIVE: frozenset[ServerStatus] = frozenset({ServerStatus.PENDING, ServerStatus.RUNNING, ServerStatus.STOPPING})
"""A worker holds the server (or should): it uses resources, and its lease is renewed."""
DONE: frozenset[ServerStatus] = frozenset({ServerStatus.STOPPED, ServerStatus.FAILED})
"""The spawn is over: nobody holds the row, and a new spawn may claim it."""

TRANSITIONS: Mapping[ServerStatus, frozenset[ServerStatus]] = MappingProxyType({
    # ready; a stop takes it over; its start failed, or an adopter found it dead
    ServerStatus.PENDING: frozenset({ServerStatus.RUNNING, ServerStatus.STOPPING, ServerStatus.FAILED}),
    # a stop; it exited (seen by its worker's poll, or by an adopter)
    ServerStatus.RUNNING: frozenset({ServerStatus.STOPPING, ServerStatus.STOPPED}),
    # another worker takes over a stop whose worker died; the stop is done
    ServerStatus.STOPPING: frozenset({ServerStatus.STOPPING, ServerStatus.STOPPED}),
    # a new spawn claims the row; a stop of a spawn that never started leaves a tombstone
    ServerStatus.STOPPED: frozenset({ServerStatus.PENDING, ServerStatus.STOPPED}),
    ServerStatus.FAILED: frozenset({ServerStatus.PENDING, ServerStatus.STOPPED}),
})
"""Every move the code makes, from each status to the statuses it may become."""

CREATED: frozenset[ServerStatus] = frozenset({ServerStatus.PENDING, ServerStatus.STOPPED})
"""The statuses a server's first row is inserted with (a claim, a tombstone)."""

COMMANDS: Mapping[DesiredState, type[SpawnServer] | type[StopServer]] = MappingProxyType({
    DesiredState.RUNNING: SpawnServer,  # a start: a new spawn, with its options
    DesiredState.STOPPED: StopServer,  # a stop: of the spawn that runs, if one does (else nothing is sent)
})
"""What requesting each desired state sends the spawner (a `Request`'s command)."""

MESSAGE_LIMIT = 2000  # characters of a done server's message kept in the row (its event carries all of it)


def sources(to: ServerStatus) -> frozenset[ServerStatus]:
    """The statuses that may move to `to`."""
    return frozenset(status for status, targets in TRANSITIONS.items() if to in targets)


class IllegalTransition(ValueError):
    """A transition the table does not allow: a bug in the caller, never a race (a race is refused by the row)."""


@dataclass(frozen=True, slots=True)
class ServerKey:
    """Which server: its owner and its name ("" for the default server); `str()` gives `user/name`."""

    user: str
    server_name: str = ""

    def __str__(self) -> str:
        return f"{self.user}/{self.server_name}"


class Guard(enum.Enum):
    """Which row a transition may write, besides the row's status being one it expects."""

    LEASED = enum.auto()
    """The row of this spawn, its lease held by the writing worker."""
    LEASED_OR_FREE = enum.auto()
    """The row of this spawn, its lease held by the writer or expired, or the server running: a running
    server is no worker's work in progress, so a stop may take it from the worker that watches it."""
    NEW_SPAWN = enum.auto()
    """No row yet, or the row of another spawn (a spawn is claimed once: a redelivered command finds its own)."""
    ANY_SPAWN = enum.auto()
    """No row yet, or the row of any spawn."""


_UPSERTS = (Guard.NEW_SPAWN, Guard.ANY_SPAWN)


@dataclass(frozen=True, kw_only=True)
class Transition:
    """One move of one server's `server_states` row, with the events it announces.

    `expected` defaults to every status the table lets move to `to` (an active one for the row of this
    spawn, a done one for a row a new spawn takes). The lease: taken by `worker` for `lease_ttl` seconds
    when given, released when `to` is done, else kept. Entering `running` records `url`, `target` and
    `state`; entering a done status records `message`; entering `pending` starts the row afresh.

    Raises:
        IllegalTransition: the table does not allow it, or a field it needs is missing.
    """

    key: ServerKey
    spawn_id: str
    to: ServerStatus
    guard: Guard = Guard.LEASED
    worker: str | None = None
    lease_ttl: float | None = None
    expected: frozenset[ServerStatus] = frozenset()
    message: str = ""
    url: str | None = None
    target: str | None = None
    state: Mapping[str, Any] | None = None
    backend: str | None = None
    events: tuple[Message, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "to", ServerStatus(self.to))  # a plain string names a status too
        object.__setattr__(self, "expected", frozenset(ServerStatus(s) for s in self.expected))
        upsert = self.guard in _UPSERTS
        allowed = sources(self.to) & (DONE if upsert else ACTIVE)
        if not self.expected:
            object.__setattr__(self, "expected", allowed)
        if upsert and self.to not in CREATED:
            raise IllegalTransition(f"no row is created as {self.to}")
        if not allowed:
            raise IllegalTransition(f"no {self.guard.name} move goes to {self.to}")
        refused = sorted(self.expected - allowed)
        if refused:
            raise IllegalTransition(f"{', '.join(refused)} may not move to {self.to} ({self.guard.name})")
        if self.worker is None and (not upsert or self.lease_ttl is not None):
            raise IllegalTransition(f"a move to {self.to} ({self.guard.name}) needs the writing worker")
        if self.to is ServerStatus.RUNNING and (self.url is None or self.target is None or self.state is None):
            raise IllegalTransition("a move to running needs the url, target and state")

    # --- the moves the spawner makes -------------------------------------------------------------

    @classmethod
    def claim(cls, key: ServerKey, spawn_id: str, *, worker: str, lease_ttl: float, backend: str) -> Transition:
        """A new spawn takes the server (absent, or done with another spawn): `pending`, leased to `worker`,
        run by `backend` (only that backend's workers adopt the row)."""
        return cls(key=key, spawn_id=spawn_id, to=ServerStatus.PENDING, guard=Guard.NEW_SPAWN, worker=worker,
                   lease_ttl=lease_ttl, backend=backend)

    @classmethod
    def tombstone(cls, key: ServerKey, spawn_id: str) -> Transition:
        """A stop of `spawn_id` before it started: `stopped` over a done row, so its late spawn is refused."""
        return cls(key=key, spawn_id=spawn_id, to=ServerStatus.STOPPED, guard=Guard.ANY_SPAWN,
                   message="stopped before start")

    @classmethod
    def stopping(cls, key: ServerKey, spawn_id: str, *, worker: str, lease_ttl: float) -> Transition:
        """A stop begins: `stopping` under `worker`'s lease (see `Guard.LEASED_OR_FREE`)."""
        return cls(key=key, spawn_id=spawn_id, to=ServerStatus.STOPPING, guard=Guard.LEASED_OR_FREE, worker=worker,
                   lease_ttl=lease_ttl)

    @classmethod
    def ready(cls, key: ServerKey, spawn_id: str, *, worker: str, url: str, target: str,
              state: Mapping[str, Any]) -> Transition:
        """`pending` → `running`, announced by `server.ready`."""
        event = ServerReady(user=key.user, server_name=key.server_name, spawn_id=spawn_id, url=url, target=target)
        return cls(key=key, spawn_id=spawn_id, to=ServerStatus.RUNNING, worker=worker, url=url, target=target,
                   state=state, events=(event,))

    @classmethod
    def stopped(cls, key: ServerKey, spawn_id: str, *, worker: str, reason: str,
                expected: frozenset[ServerStatus] = frozenset()) -> Transition:
        """→ `stopped` for `reason`, announced by `server.stopped`; releases the lease."""
        event = ServerStopped(user=key.user, server_name=key.server_name, spawn_id=spawn_id, reason=reason)
        return cls(key=key, spawn_id=spawn_id, to=ServerStatus.STOPPED, worker=worker, expected=expected,
                   message=reason, events=(event,))

    @classmethod
    def failed(cls, key: ServerKey, spawn_id: str, *, worker: str, message: str) -> Transition:
        """→ `failed` with `message`, announced by `server.failed`; releases the lease."""
        event = ServerFailed(user=key.user, server_name=key.server_name, spawn_id=spawn_id, message=message)
        return cls(key=key, spawn_id=spawn_id, to=ServerStatus.FAILED, worker=worker, message=message,
                   events=(event,))


class _Same(enum.Enum):
    SPAWN = enum.auto()  # `Request.stop`'s default `expected_spawn`: the spawn it stops


@dataclass(frozen=True, kw_only=True)
class Request:
    """One change of what a server should be (its `servers` row), with the command that asks the spawner for it.

    The row (`server_id`'s, else the one of `key`) moves only if its desired state is one of `expected` and
    its spawn is `expected_spawn` (None: it never started): a request made on a stale reading is refused,
    and sends nothing. A start records the spawn it sends (its id, options and time) and `display_name`
    when given. A stop without a command (no spawn runs) only records the desired state.

    Raises:
        IllegalTransition: the command is not the one `to` sends (`COMMANDS`), or another server's, or a
            start has none, or a stop has a display name.
    """

    key: ServerKey
    to: DesiredState
    expected: frozenset[DesiredState]
    expected_spawn: str | None
    command: SpawnServer | StopServer | None = field(default=None, repr=False)
    server_id: int | None = None
    display_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "to", DesiredState(self.to))  # a plain string names a desired state too
        object.__setattr__(self, "expected", frozenset(DesiredState(s) for s in self.expected))
        if not self.expected:
            raise IllegalTransition("a request expects the row in some desired state")
        command = self.command
        if command is None and self.to is DesiredState.RUNNING:
            raise IllegalTransition("a start sends its spawn")
        if command is not None and not isinstance(command, COMMANDS[self.to]):
            raise IllegalTransition(f"a request for {self.to} does not send {type(command).__name__}")
        if command is not None and ServerKey(command.user, command.server_name) != self.key:
            raise IllegalTransition(f"a request for {self.key} sends a command for another server")
        if self.display_name is not None and self.to is not DesiredState.RUNNING:
            raise IllegalTransition("only a start records a display name")

    @classmethod
    def start(cls, key: ServerKey, spawn_id: str, *, user_options: Mapping[str, Any], expected_spawn: str | None,
              backend: str, expected: frozenset[DesiredState] = frozenset(DesiredState),
              display_name: str | None = None, server_id: int | None = None) -> Request:
        """Desired `running` under the new `spawn_id`, replacing `expected_spawn`: sends `SpawnServer` with
        `user_options` to the workers of `backend`; the row records both with it."""
        command = SpawnServer(user=key.user, server_name=key.server_name, spawn_id=spawn_id,
                              user_options=dict(user_options), backend=backend)
        return cls(key=key, to=DesiredState.RUNNING, expected=expected, expected_spawn=expected_spawn,
                   command=command, server_id=server_id, display_name=display_name)

    @classmethod
    def stop(cls, key: ServerKey, spawn_id: str | None, *, reason: str,
             expected: frozenset[DesiredState] = frozenset({DesiredState.RUNNING}),
             expected_spawn: str | Literal[_Same.SPAWN] | None = _Same.SPAWN,
             server_id: int | None = None, backend: str = "") -> Request:
        """Desired `stopped`, sending `StopServer` of `spawn_id` for `reason` (None: no spawn runs, nothing is
        sent) to the workers of `backend` (default: the backend the row records). The row is expected to hold
        `spawn_id` unless `expected_spawn` names another (an older spawn still runs: the row holds a newer one,
        or none)."""
        command = None if spawn_id is None else StopServer(user=key.user, server_name=key.server_name,
                                                           spawn_id=spawn_id, reason=reason, backend=backend)
        return cls(key=key, to=DesiredState.STOPPED, expected=expected,
                   expected_spawn=spawn_id if expected_spawn is _Same.SPAWN else expected_spawn,
                   command=command, server_id=server_id)


class Relay(Protocol):
    """What publishes committed outbox rows (`fleethub.shared.outbox.OutboxRelay`)."""

    def kick(self) -> None:
        """Publish pending rows now."""


@dataclass(frozen=True)
class Announcer:
    """Where a transition's events go: the outbox of `namespace`, published by `relay` (the relay of the
    service `origin`, whose rows they are) once committed."""

    namespace: str
    relay: Relay
    origin: str


@overload
async def transition(session: AsyncSession, change: Transition, announcer: Announcer) -> ServerState | None: ...
@overload
async def transition(session: AsyncSession, change: Request, announcer: Announcer) -> Server | None: ...


async def transition(session: AsyncSession, change: Transition | Request,
                     announcer: Announcer) -> ServerState | Server | None:
    """Make `change` in the caller's transaction: the row as it now is, or None if the row refused it, in
    which case nothing is enqueued. A `Transition` moves the `server_states` row (refused: another spawn's,
    another worker's lease, or not in an expected status), a `Request` the `servers` row (refused: another
    spawn's, or not in an expected desired state, or no such row). What it announces (a `Transition`'s
    events, a `Request`'s command) is enqueued with it, and the relay is woken when the transaction commits.
    The session's objects of the row are refreshed from it.
    """
    # imported here: the ORM models import this module (their column defaults), and the outbox imports them
    from fleethub.shared.db.models import Server, ServerState, User
    from fleethub.shared.outbox import enqueue

    refresh = {"populate_existing": True}  # the row's object in the session gets the values RETURNING gave
    row: ServerState | Server | None
    messages: tuple[Message, ...]
    if isinstance(change, Request):
        row = await session.scalar(_request_statement(Server, User, change), execution_options=refresh)
        command = change.command
        if isinstance(command, StopServer) and not command.backend and row is not None and row.backend:
            command = command.model_copy(update={"backend": row.backend})  # to the workers running it
        messages = () if command is None else (command,)
    else:
        row = await session.scalar(_statement(ServerState, change), execution_options=refresh)
        messages = change.events
    if row is not None and messages:
        for message in messages:
            enqueue(session, message, announcer.namespace, origin=announcer.origin)
        relay = announcer.relay
        # after the commit, not before: a relay woken earlier finds nothing yet and sleeps a poll interval
        event.listen(session.sync_session, "after_commit", lambda _session: relay.kick(), once=True)
    return row


def _columns(change: Transition) -> dict[str, Any]:
    """What the move writes besides the key: the status, the lease, and what entering the status records."""
    now = func.now()
    cols: dict[str, Any] = {"status": change.to}
    if change.guard in _UPSERTS:
        cols["spawn_id"] = change.spawn_id
    if change.backend is not None:
        cols["backend"] = change.backend
    if change.lease_ttl is not None:
        cols |= {"worker_id": change.worker, "lease_expires": func.now() + timedelta(seconds=change.lease_ttl)}
    if change.to is ServerStatus.PENDING:
        cols |= {"state": {}, "message": "", "url": None, "target": None, "started": None, "stopped": None}
    elif change.to is ServerStatus.RUNNING:
        cols |= {"url": change.url, "target": change.target, "state": dict(change.state or {}), "started": now}
    elif change.to in DONE:
        cols |= {"message": change.message[:MESSAGE_LIMIT], "stopped": now, "worker_id": None, "lease_expires": None,
                 "url": None, "target": None}
    cols["updated"] = now
    return cols


def _statement(table: type[ServerState],
               change: Transition) -> ReturningInsert[ServerState] | ReturningUpdate[ServerState]:
    """The one conditional statement of `change`: an upsert for a new spawn's row, else an update of this spawn's."""
    cols = _columns(change)
    expected = sorted(change.expected)
    status_ok = table.status == expected[0] if len(expected) == 1 else table.status.in_(expected)
    if change.guard in _UPSERTS:
        guard = and_(status_ok, table.spawn_id != change.spawn_id) if change.guard is Guard.NEW_SPAWN else status_ok
        return (
            insert(table)
            .values({"user_name": change.key.user, "server_name": change.key.server_name, "state": {}, **cols})
            .on_conflict_do_update(index_elements=["user_name", "server_name"], set_=cols, where=guard)
            .returning(table)
        )
    lease = table.worker_id == change.worker
    if change.guard is Guard.LEASED_OR_FREE:
        lease = or_(table.status == ServerStatus.RUNNING, lease, table.lease_expires < func.now())
    return (
        update(table)
        .where(table.user_name == change.key.user, table.server_name == change.key.server_name,
               table.spawn_id == change.spawn_id, status_ok, lease)
        .values(**cols)
        .returning(table)
    )


def _request_statement(table: type[Server], users: type[User], change: Request) -> ReturningUpdate[Server]:
    """The one conditional UPDATE of `change`'s `servers` row: its desired state, and a start's new spawn."""
    cols: dict[str, Any] = {"desired": change.to}
    if isinstance(change.command, SpawnServer):
        spawn = change.command
        cols |= {"spawn_id": spawn.spawn_id, "user_options": spawn.user_options, "requested_at": spawn.requested_at,
                 "backend": spawn.backend}
        if change.display_name is not None:
            cols["display_name"] = change.display_name
    if change.server_id is not None:
        row = table.id == change.server_id
    else:
        owner = select(users.id).where(users.name == change.key.user).scalar_subquery()
        row = and_(table.user_id == owner, table.name == change.key.server_name)
    expected = sorted(change.expected)
    desired_ok = table.desired == expected[0] if len(expected) == 1 else table.desired.in_(expected)
    spawn_ok = table.spawn_id.is_(None) if change.expected_spawn is None else table.spawn_id == change.expected_spawn
    return update(table).where(row, desired_ok, spawn_ok).values(**cols).returning(table)
