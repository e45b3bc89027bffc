"""`fleethub.shared.lifecycle.transition` against a real PostgreSQL: each move (a spawner's `Transition` of
`server_states`, an api or culler `Request` of `servers`) is one conditional statement that refuses a stale
writer (another spawn, another worker's lease, an unexpected status or desired state), what it announces is
enqueued in the same transaction (and only when the row moved), and the relay is woken after the commit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import OutboxMessage, Server, ServerState, User
from fleethub.shared.lifecycle import Announcer, DesiredState, Request, ServerKey, ServerStatus, Transition, transition
from tests.support.cluster import migrated

pytestmark = pytest.mark.integration

KEY = ServerKey("alice", "gpu")
NS = "tlife"
STATE = {"pid": 1, "ip": "127.0.0.1", "port": 1}


@dataclass
class CountingRelay:
    """Counts wake-ups (the relay itself is tested in test_outbox_relay.py)."""

    kicks: int = 0

    def kick(self) -> None:
        self.kicks += 1


@dataclass
class Db:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    relay: CountingRelay = field(default_factory=CountingRelay)

    @property
    def announcer(self) -> Announcer:
        return Announcer(NS, self.relay, "spawner")

    async def apply(self, change: Transition) -> ServerState | None:
        async with self.sessions() as session, session.begin():
            return await transition(session, change, self.announcer)

    async def request(self, change: Request) -> Server | None:
        async with self.sessions() as session, session.begin():
            return await transition(session, change, self.announcer)

    async def server(self, *, desired: DesiredState = DesiredState.STOPPED, spawn_id: str | None = None) -> Server:
        """KEY's `servers` row (its user created if missing), as the api leaves it."""
        async with self.sessions() as session, session.begin():
            user = (await session.execute(select(User).where(User.name == KEY.user))).scalar()
            if user is None:
                user = User(name=KEY.user)
                session.add(user)
                await session.flush()
            server = Server(user_id=user.id, name=KEY.server_name, desired=desired, spawn_id=spawn_id,
                            user_options={"size": "s"})
            session.add(server)
        return server

    async def stored(self) -> Server:
        async with self.sessions() as session:
            return (await session.execute(select(Server).where(Server.name == KEY.server_name))).scalar_one()

    async def row(self) -> ServerState | None:
        async with self.sessions() as session:
            return (await session.execute(select(ServerState).where(
                ServerState.user_name == KEY.user, ServerState.server_name == KEY.server_name))).scalar()

    async def outbox(self) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = (await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars().all()
        return [json.loads(r.payload) for r in rows]

    async def expire_lease(self) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(update(ServerState).where(ServerState.user_name == KEY.user)
                                  .values(lease_expires=func.now() - timedelta(seconds=60)))

    @contextmanager
    def statements(self) -> Iterator[list[str]]:
        seen: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)

        event.listen(self.engine.sync_engine, "before_cursor_execute", record)
        try:
            yield seen
        finally:
            event.remove(self.engine.sync_engine, "before_cursor_execute", record)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Db]:
    await migrated(database_url)
    engine = make_engine(database_url, pool_size=2)
    try:
        yield Db(engine, make_sessionmaker(engine))
    finally:
        await engine.dispose()


def _claim(spawn_id: str = "s1", worker: str = "w1") -> Transition:
    return Transition.claim(KEY, spawn_id, worker=worker, lease_ttl=30, backend="local")


def _ready(spawn_id: str = "s1", worker: str = "w1") -> Transition:
    return Transition.ready(KEY, spawn_id, worker=worker, url="/user/alice/gpu/", target="http://127.0.0.1:1",
                            state=STATE)


async def test_a_move_is_one_statement_and_its_event_is_committed_with_it(db: Db) -> None:
    assert await db.apply(_claim()) is not None
    async with db.sessions() as session, session.begin():
        with db.statements() as seen:
            row = await transition(session, _ready(), db.announcer)
        assert len(seen) == 1 and seen[0].lstrip().upper().startswith("UPDATE")
        assert row is not None and row.status == ServerStatus.RUNNING and row.worker_id == "w1"
        assert db.relay.kicks == 0  # not before the commit: the relay would find nothing yet
    assert db.relay.kicks == 1
    stored = await db.row()
    assert stored is not None and (stored.status, stored.url, stored.target, stored.state) == (
        "running", "/user/alice/gpu/", "http://127.0.0.1:1", STATE)
    [ready] = await db.outbox()
    assert ready["type"] == "server.ready" and ready["data"]["spawn_id"] == "s1"
    assert ready["data"]["target"] == "http://127.0.0.1:1"


async def test_a_stale_writer_is_refused_and_nothing_is_enqueued(db: Db) -> None:
    assert await db.apply(_claim()) is not None
    assert await db.apply(_ready(worker="w2")) is None  # another worker's lease
    assert await db.apply(_ready(spawn_id="s0")) is None  # an older spawn
    stale_exit = Transition.stopped(KEY, "s1", worker="w1", reason="exited", expected=frozenset({ServerStatus.RUNNING}))
    assert await db.apply(stale_exit) is None  # not running (yet)
    row = await db.row()
    assert row is not None and row.status == ServerStatus.PENDING
    assert await db.outbox() == [] and db.relay.kicks == 0


async def test_a_rolled_back_move_enqueues_nothing_and_wakes_nobody(db: Db) -> None:
    assert await db.apply(_claim()) is not None
    with pytest.raises(RuntimeError):
        async with db.sessions() as session, session.begin():
            assert await transition(session, _ready(), db.announcer) is not None
            raise RuntimeError("the caller fails after the move")
    row = await db.row()
    assert row is not None and row.status == ServerStatus.PENDING
    assert await db.outbox() == [] and db.relay.kicks == 0


async def test_done_releases_the_lease_and_keeps_a_bounded_message(db: Db) -> None:
    assert await db.apply(_claim()) is not None
    long = "x" * 5000
    row = await db.apply(Transition.failed(KEY, "s1", worker="w1", message=long))
    assert row is not None and row.status == ServerStatus.FAILED
    assert (row.worker_id, row.lease_expires, row.url, row.target) == (None, None, None, None)
    assert row.message == long[:2000] and row.stopped is not None
    [failed] = await db.outbox()
    assert failed["type"] == "server.failed" and failed["data"]["message"] == long  # the event carries all of it
    assert db.relay.kicks == 1


async def test_claims_take_only_done_rows_of_another_spawn(db: Db) -> None:
    assert await db.apply(_claim("s1")) is not None
    assert await db.apply(_claim("s2", "w2")) is None  # s1 is pending
    assert await db.apply(Transition.stopped(KEY, "s1", worker="w1", reason="api")) is None  # pending → stopped: no
    assert await db.apply(Transition.failed(KEY, "s1", worker="w1", message="boom")) is not None
    assert await db.apply(_claim("s1")) is None  # a spawn is claimed once: its redelivered command finds it done
    row = await db.apply(_claim("s2", "w2"))
    assert row is not None and (row.spawn_id, row.status, row.worker_id, row.message) == ("s2", "pending", "w2", "")
    assert row.lease_expires is not None and row.stopped is None


async def test_a_tombstone_lands_on_no_row_or_a_done_one(db: Db) -> None:
    row = await db.apply(Transition.tombstone(KEY, "s1"))
    assert row is not None and (row.status, row.spawn_id, row.message) == ("stopped", "s1", "stopped before start")
    assert await db.apply(_claim("s1")) is None  # the late spawn is refused
    assert await db.apply(_claim("s2")) is not None
    assert await db.apply(Transition.tombstone(KEY, "s3")) is None  # s2 is pending: not overwritten
    assert await db.outbox() == [] and db.relay.kicks == 0  # neither claims nor tombstones announce anything


async def test_a_stop_takes_a_running_server_or_an_expired_lease_never_a_live_start(db: Db) -> None:
    assert await db.apply(_claim()) is not None
    stop = Transition.stopping(KEY, "s1", worker="w2", lease_ttl=30)
    assert await db.apply(stop) is None  # w1 is starting it, its lease live
    await db.expire_lease()
    row = await db.apply(stop)  # w1 died: its lease expired
    assert row is not None and (row.status, row.worker_id) == ("stopping", "w2")
    done = await db.apply(Transition.stopped(KEY, "s1", worker="w2", reason="api"))
    assert done is not None and done.status == ServerStatus.STOPPED
    assert await db.apply(_claim("s2")) is not None and await db.apply(_ready("s2")) is not None
    row = await db.apply(Transition.stopping(KEY, "s2", worker="w3", lease_ttl=30))  # running: anyone may stop it
    assert row is not None and (row.status, row.worker_id) == ("stopping", "w3")
    assert [m["type"] for m in await db.outbox()] == ["server.stopped", "server.ready"]


# --- requests: the desired state (`servers`), written by the api and the culler --------------------------


def _start(spawn_id: str, expected_spawn: str | None = None, **kw: Any) -> Request:
    return Request.start(KEY, spawn_id, user_options={"size": "l"}, expected_spawn=expected_spawn, backend="local",
                         **kw)


async def test_a_start_is_one_update_its_command_enqueued_and_the_held_row_refreshed(db: Db) -> None:
    server = await db.server()
    async with db.sessions() as session, session.begin():
        held = (await session.execute(select(Server).where(Server.id == server.id).with_for_update())).scalar_one()
        request = _start("s1", expected=frozenset({DesiredState.STOPPED}), server_id=server.id, display_name="GPU")
        with db.statements() as seen:
            row = await transition(session, request, db.announcer)
        assert len(seen) == 1 and seen[0].lstrip().upper().startswith("UPDATE")
        assert row is held  # the object the caller holds, with the values the UPDATE returned
        assert (held.desired, held.spawn_id, held.user_options, held.display_name) == ("running", "s1", {"size": "l"},
                                                                                      "GPU")
        assert held.requested_at is not None
        assert db.relay.kicks == 0  # not before the commit
    assert db.relay.kicks == 1
    stored = await db.stored()
    assert (stored.desired, stored.spawn_id, stored.user_options) == ("running", "s1", {"size": "l"})
    [spawn] = await db.outbox()
    assert spawn["type"] == "spawn" and spawn["data"]["spawn_id"] == "s1" and spawn["data"]["user_options"] == {
        "size": "l"}
    assert stored.requested_at is not None and spawn["data"]["requested_at"].startswith(
        stored.requested_at.isoformat()[:19])  # the row and the command carry one time


async def test_a_request_on_a_stale_reading_is_refused_and_sends_nothing(db: Db) -> None:
    server = await db.server(desired=DesiredState.RUNNING, spawn_id="s1")
    assert await db.request(_start("s2", expected_spawn="s0", server_id=server.id)) is None  # another spawn's row
    assert await db.request(_start("s2", "s1", expected=frozenset({DesiredState.STOPPED}))) is None  # it is running
    assert await db.request(Request.stop(KEY, "s0", reason="culler")) is None  # an older spawn: not this row's
    assert await db.request(Request.stop(ServerKey("alice", "other"), "s1", reason="culler")) is None  # no such row
    assert await db.request(Request.stop(ServerKey("nobody", "gpu"), "s1", reason="culler")) is None
    stored = await db.stored()
    assert (stored.desired, stored.spawn_id) == ("running", "s1")
    assert await db.outbox() == [] and db.relay.kicks == 0


async def test_a_stop_by_name_is_sent_once_however_often_it_is_asked(db: Db) -> None:
    await db.server(desired=DesiredState.RUNNING, spawn_id="s1")
    row = await db.request(Request.stop(KEY, "s1", reason="culler"))  # found by user name and server name
    assert row is not None and (row.desired, row.spawn_id) == ("stopped", "s1")
    assert await db.request(Request.stop(KEY, "s1", reason="culler")) is None  # desired is stopped already
    [stop] = await db.outbox()
    assert stop["type"] == "stop" and (stop["data"]["spawn_id"], stop["data"]["reason"]) == ("s1", "culler")
    assert db.relay.kicks == 1


async def test_a_stop_of_nothing_running_records_the_desired_state_and_sends_nothing(db: Db) -> None:
    server = await db.server(desired=DesiredState.RUNNING, spawn_id="s1")
    row = await db.request(Request.stop(KEY, None, reason="api", expected_spawn="s1", server_id=server.id))
    assert row is not None and row.desired == "stopped"
    assert await db.outbox() == [] and db.relay.kicks == 0
    # an older spawn still runs while the row holds none (a removed server, created again): that one is stopped
    async with db.sessions() as session, session.begin():
        await session.execute(update(Server).where(Server.id == server.id).values(spawn_id=None))
    row = await db.request(Request.stop(KEY, "s0", reason="api", expected=frozenset({DesiredState.STOPPED}),
                                        expected_spawn=None, server_id=server.id))
    assert row is not None and (row.desired, row.spawn_id) == ("stopped", None)
    [stop] = await db.outbox()
    assert stop["data"]["spawn_id"] == "s0" and db.relay.kicks == 1
