"""`fleethub.shared.lifecycle.transition` against a real PostgreSQL: each move is one conditional statement
that refuses a stale writer (another spawn, another worker's lease, an unexpected status), its event is
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
from fleethub.shared.db.models import OutboxMessage, ServerState
from fleethub.shared.lifecycle import Announcer, ServerKey, ServerStatus, Transition, transition
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
        return Announcer(NS, self.relay)

    async def apply(self, change: Transition) -> ServerState | None:
        async with self.sessions() as session, session.begin():
            return await transition(session, change, self.announcer)

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
    return Transition.claim(KEY, spawn_id, worker=worker, lease_ttl=30)


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
