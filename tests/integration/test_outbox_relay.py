"""The outbox relay against a real NATS and PostgreSQL: every committed row reaches the stream once and in
order, and a row that cannot be published stops the relay there, the rows before it marked published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import Bus, BusError
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.models import OutboxMessage
from shared.events import UserCreated, subject_filter, unwrap
from shared.outbox import BATCH, OutboxRelay, enqueue
from tests.support.cluster import migrated

pytestmark = pytest.mark.integration


@dataclass
class Relaying:
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    relay: OutboxRelay
    namespace: str


@pytest.fixture
async def relaying(database_url: str, nats_url: str, nats_namespace: str) -> AsyncIterator[Relaying]:
    await migrated(database_url)
    engine = make_engine(database_url, pool_size=2)
    bus = Bus(nats_url, nats_namespace, "relay-test")
    await bus.connect()
    try:
        await bus.ensure_topology()
        sessions = make_sessionmaker(engine)
        yield Relaying(sessions, bus, OutboxRelay(sessions, bus), nats_namespace)
    finally:
        await bus.close()
        await engine.dispose()


async def _enqueue(r: Relaying, names: list[str]) -> None:
    async with r.sessions() as s, s.begin():
        for name in names:
            enqueue(s, UserCreated(name=name), r.namespace)


async def _published(r: Relaying) -> list[str]:
    """The names of every user.created event in the stream, in stream order."""
    sub = await r.bus.js.pull_subscribe(subject_filter(UserCreated, r.namespace), durable=None,
                                        stream=r.bus.names.evt_stream)
    names: list[str] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except Exception:  # nats-py's fetch timeout: nothing more
                break
            for m in msgs:
                _, message = unwrap(m.data, "evt")
                assert isinstance(message, UserCreated)
                names.append(message.name)
                await m.ack()
    finally:
        await sub.unsubscribe()
    return names


async def _pending(r: Relaying) -> int:
    async with r.sessions() as s:
        return int((await s.execute(select(func.count()).where(OutboxMessage.published_at.is_(None)))).scalar_one())


async def test_every_row_once_and_in_order(relaying: Relaying) -> None:
    names = [f"u{i:04d}" for i in range(2 * BATCH + 57)]  # several passes, several windows each
    await _enqueue(relaying, names)
    assert await relaying.relay.flush() == len(names)
    assert await _pending(relaying) == 0
    assert await relaying.relay.flush() == 0
    assert await _published(relaying) == names


async def test_a_row_that_cannot_be_published_stops_the_relay_there(relaying: Relaying) -> None:
    before, after = [f"a{i:03d}" for i in range(100)], [f"b{i:03d}" for i in range(100)]
    await _enqueue(relaying, before)
    async with relaying.sessions() as s, s.begin():  # a subject no stream takes: JetStream has no responder
        s.add(OutboxMessage(msg_id="poison", kind="evt", subject=f"{relaying.namespace}.nowhere.x", payload="{}"))
    await _enqueue(relaying, after)
    with pytest.raises(BusError):
        await relaying.relay.flush()
    # the rows before it are published and marked (the failed pass used to roll its marks back, so they
    # were all published again); it and the rows after it stay pending
    assert await _pending(relaying) == 1 + len(after)
    async with relaying.sessions() as s, s.begin():
        poison = (await s.execute(select(OutboxMessage).where(OutboxMessage.msg_id == "poison"))).scalar_one()
        await s.delete(poison)
    assert await relaying.relay.flush() == len(after)
    # each event once, in order
    assert await _published(relaying) == before + after
