"""The outbox relay against a real NATS and PostgreSQL: every committed row reaches the stream once and in
order (as atomic batches where the server takes them, one by one where it does not or where the stream
already has some of a batch), and a row that cannot be published stops the relay there, the rows before
it marked published."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import fleethub.shared.bus.topology
from fleethub.shared.bus import Bus, BusError, relays_for
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import OutboxMessage
from fleethub.shared.events import SpawnServer, StopServer, UserCreated, subject_filter, unwrap
from fleethub.shared.outbox import BATCH, OutboxRelay, enqueue
from tests.support.cluster import migrated, wait_for

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
        yield Relaying(sessions, bus, OutboxRelay(sessions, bus, origin="api"), nats_namespace)
    finally:
        await bus.close()
        await engine.dispose()


async def _enqueue(r: Relaying, names: list[str]) -> None:
    async with r.sessions() as s, s.begin():
        for name in names:
            enqueue(s, UserCreated(name=name), r.namespace, origin="api")


async def _published(r: Relaying) -> list[str]:
    """The names of every user.created event in the stream, in stream order."""
    return [name for name, _ in await _published_with_batches(r)]


async def _published_with_batches(r: Relaying) -> list[tuple[str, str | None]]:
    """Every user.created event in the stream, in stream order: its name and the atomic batch it came in."""
    sub = await r.bus.js.pull_subscribe(subject_filter(UserCreated, r.namespace), durable=None,
                                        stream=r.bus.names.evt_stream)
    names: list[tuple[str, str | None]] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except Exception:  # nats-py's fetch timeout: nothing more
                break
            for m in msgs:
                _, message = unwrap(m.data, "evt")
                assert isinstance(message, UserCreated)
                names.append((message.name, (m.headers or {}).get("Nats-Batch-Id")))
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
        s.add(OutboxMessage(msg_id="poison", kind="evt", origin="api", subject=f"{relaying.namespace}.nowhere.x",
                            payload="{}"))
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


def _server_has_atomic_batches(r: Relaying) -> bool:
    version = r.bus.nc.connected_server_version
    return (version.major, version.minor) >= (2, 12)


async def test_rows_of_one_stream_go_as_atomic_batches(relaying: Relaying) -> None:
    names = [f"v{i:04d}" for i in range(BATCH + 37)]
    await _enqueue(relaying, names)
    async with relaying.sessions() as s, s.begin():  # a command between events: a run of its own stream
        enqueue(s, SpawnServer(user="v0000", server_name="", spawn_id="s1"), relaying.namespace, origin="api")
    await _enqueue(relaying, [f"w{i:03d}" for i in range(20)])
    assert await relaying.relay.flush() == len(names) + 1 + 20
    published = await _published_with_batches(relaying)
    assert [n for n, _ in published] == names + [f"w{i:03d}" for i in range(20)]
    batches = [b for _, b in published]
    evt = relaying.bus.names.evt_stream
    if _server_has_atomic_batches(relaying):  # nats-server 2.12+ (the embedded one is)
        assert relaying.bus.takes_batches(evt) and relaying.bus.takes_batches(relaying.bus.names.cmd_stream)
        # one batch per pass and run: the first pass's 200 events, then 37, then the 20 after the command
        assert None not in batches
        assert [len(list(g)) for _, g in itertools.groupby(batches)] == [BATCH, 37, 20]
    else:
        assert not relaying.bus.takes_batches(evt) and batches == [None] * len(published)
    info = await relaying.bus.js.stream_info(relaying.bus.names.cmd_stream)
    assert info.state.messages == 1


async def test_a_batch_the_stream_partly_has_goes_one_by_one(relaying: Relaying,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A pass that published but could not mark its rows (a crash, a lost connection to PostgreSQL) leaves
    rows the stream already has: the next batch holding them is refused whole, and one by one each of
    them is dropped as a duplicate and the rest are stored."""
    names = [f"p{i:03d}" for i in range(120)]
    await _enqueue(relaying, names)
    async with relaying.sessions() as s:
        rows = (await s.execute(select(OutboxMessage).order_by(OutboxMessage.id).limit(45))).scalars().all()
    for row in rows:
        await relaying.bus.publish_raw(row.subject, row.payload.encode(), row.msg_id)
    with caplog.at_level(logging.INFO, logger="fleethub.shared.outbox"):
        assert await relaying.relay.flush() == len(names)
    if _server_has_atomic_batches(relaying):  # refused by the server (a duplicate id), not failed
        assert "a batch of 120 was refused" in caplog.text and "failed" not in caplog.text
    assert await relaying.relay.flush() == 0
    assert await _published(relaying) == names


async def _relay_stops_at(r: Relaying, bad: UserCreated, before: list[str], after: list[str]) -> None:
    """Enqueue `before`, `bad` and `after`: the relay publishes and marks `before` (one by one once the
    batch fails or is refused) and stops at `bad`; once `bad` is removed, `after` follows, in order."""
    await _enqueue(r, before)
    async with r.sessions() as s, s.begin():
        enqueue(s, bad, r.namespace, msg_id="bad", origin="api")
    await _enqueue(r, after)
    with pytest.raises(BusError):
        await r.relay.flush()
    assert await _pending(r) == 1 + len(after)
    async with r.sessions() as s, s.begin():
        await s.delete((await s.execute(select(OutboxMessage).where(OutboxMessage.msg_id == "bad"))).scalar_one())
    assert await r.relay.flush() == len(after)
    assert await _published(r) == before + after


async def test_a_row_that_breaks_its_batch_stops_the_relay_there(relaying: Relaying) -> None:
    """A message the client refuses to send (over the server's max payload) in the middle of a run."""
    huge = UserCreated(name="x" * (relaying.bus.nc.max_payload + 10))
    await _relay_stops_at(relaying, huge, [f"c{i:03d}" for i in range(60)], [f"d{i:03d}" for i in range(30)])


async def test_a_message_the_server_refuses_within_a_batch_stops_the_relay_there(relaying: Relaying) -> None:
    """A message the server refuses (larger than the stream takes) in the middle of a run."""
    info = await relaying.bus.js.stream_info(relaying.bus.names.evt_stream)
    info.config.max_msg_size = 4096
    await relaying.bus.js.update_stream(info.config)
    large = UserCreated(name="y" * 5000)
    await _relay_stops_at(relaying, large, [f"g{i:03d}" for i in range(40)], [f"h{i:03d}" for i in range(25)])


async def test_streams_declared_before_batches_take_them_after_an_upgrade(relaying: Relaying) -> None:
    """Streams an earlier fleethub declared without `allow_atomic` get it from `ensure_topology`; a stream
    an operator turned it off on meanwhile is published to one message at a time again, nothing lost."""
    bus, names = relaying.bus, relaying.bus.names
    assert bus.stream_of(f"{relaying.namespace}.evt.user.created") == names.evt_stream
    assert bus.stream_of(f"{relaying.namespace}.cmd.local.spawn.a._") == names.cmd_stream
    assert bus.stream_of(f"{relaying.namespace}.nowhere.x") is None
    assert bus.stream_of("other.evt.user.created") is None
    info = await bus.js.stream_info(names.evt_stream)
    info.config.allow_atomic = False
    await bus.js.update_stream(info.config)
    await bus.ensure_topology()
    assert bus.takes_batches(names.evt_stream) == _server_has_atomic_batches(relaying)

    first = [f"e{i:03d}" for i in range(30)]
    await _enqueue(relaying, first)
    info = await bus.js.stream_info(names.evt_stream)
    info.config.allow_atomic = False  # behind the bus's back: it still thinks the stream takes batches
    await bus.js.update_stream(info.config)
    assert await relaying.relay.flush() == len(first)  # the batch is refused, then one by one
    assert not bus.takes_batches(names.evt_stream)
    second = [f"f{i:03d}" for i in range(30)]
    await _enqueue(relaying, second)
    assert await relaying.relay.flush() == len(second)
    published = await _published_with_batches(relaying)
    assert published == [(name, None) for name in first + second]


async def test_batches_are_tried_again_after_a_refusal(relaying: Relaying, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that refused batches is tried again `BATCHES_RETRY` seconds later (0 here): once it takes
    them again, runs go as batches again."""
    monkeypatch.setattr(fleethub.shared.bus.topology, "BATCHES_RETRY", 0.0)
    bus, evt = relaying.bus, relaying.bus.names.evt_stream
    if not _server_has_atomic_batches(relaying):  # (a server given by FLEETHUB_TEST_NATS_URL may be older)
        assert not bus.takes_batches(evt)  # nothing to try again: the stream never took batches
        return
    info = await bus.js.stream_info(evt)
    info.config.allow_atomic = False
    await bus.js.update_stream(info.config)
    first = [f"r{i:03d}" for i in range(30)]
    await _enqueue(relaying, first)
    assert await relaying.relay.flush() == len(first)
    info.config.allow_atomic = True
    await bus.js.update_stream(info.config)
    second = [f"s{i:03d}" for i in range(30)]
    await _enqueue(relaying, second)
    assert await relaying.relay.flush() == len(second)
    published = await _published_with_batches(relaying)
    assert [name for name, _ in published] == first + second
    assert {batch for _, batch in published[:30]} == {None}
    batches = {batch for _, batch in published[30:]}
    assert len(batches) == 1 and None not in batches


async def test_a_relay_publishes_only_its_own_services_rows(relaying: Relaying) -> None:
    # the security review: any relay published any row (the auth service could publish the api's
    # events and commands); now the auth relay leaves the api's rows to the api's relay
    await _enqueue(relaying, ["own1", "own2"])
    auth_relay = OutboxRelay(relaying.sessions, relaying.bus, origin="auth")
    assert await auth_relay.flush() == 0
    assert await _pending(relaying) == 2 and await _published(relaying) == []
    async with relaying.sessions() as s, s.begin():
        enqueue(s, UserCreated(name="authrow"), relaying.namespace, origin="auth")
    assert await auth_relay.flush() == 1  # its own row only
    assert await _published(relaying) == ["authrow"]
    assert await relaying.relay.flush() == 2
    assert await _published(relaying) == ["authrow", "own1", "own2"]


async def test_the_api_relays_the_cullers_stop_requests_too(relaying: Relaying) -> None:
    # a culler that committed a stop request and died before relaying it: the api's relay (which may
    # publish every command) sends it, so the stop is not left waiting for a culler to come back
    assert relays_for("api") == ("culler",) and relays_for("culler") == () and relays_for("auth") == ()
    async with relaying.sessions() as s, s.begin():
        enqueue(s, StopServer(user="alice", reason="culler"), relaying.namespace, origin="culler")
    api_relay = OutboxRelay(relaying.sessions, relaying.bus, origin="api", also=relays_for("api"))
    assert await api_relay.flush() == 1
    assert await _pending(relaying) == 0


async def test_the_migration_gives_unpublished_rows_the_service_that_wrote_them(database_url: str) -> None:
    """Rows left unpublished by the previous version get the origin of the service that writes them."""
    migration = importlib.import_module("fleethub.shared.db.migrations.versions.0005_outbox_origin")
    engine = make_engine(database_url, pool_size=1)
    cases = {"fh.cmd.local.spawn.alice._": "api", "fh.cmd.local.stop.alice._": "api", "fh.evt.server.ready": "spawner",
             "fh.evt.server.progress": "spawner", "fh.evt.user.logged_in": "auth", "fh.evt.user.logged_out": "auth",
             "fh.evt.user.created": "api", "fh.evt.access.changed": "api", "fh.evt.hub.shutdown": "api"}
    try:
        async with engine.connect() as conn:
            for subject, want in cases.items():
                sql = sa.text(f"SELECT {migration.ORIGIN_BY_SUBJECT} FROM (SELECT :s AS subject) AS row")
                got = (await conn.execute(sql, {"s": subject})).scalar()
                assert got == want, subject
    finally:
        await engine.dispose()


async def test_a_commit_that_enqueued_wakes_the_relays_of_its_process(relaying: Relaying) -> None:
    # nobody kicks the relay and its poll is an hour away: the commit itself wakes it (an idle hub polls
    # rarely instead of four times a second per service)
    await _enqueue(relaying, ["before"])  # published by the relay's first pass, at its start
    relay = OutboxRelay(relaying.sessions, relaying.bus, poll_interval=3600, origin="api")
    task = asyncio.create_task(relay.run())

    async def published() -> bool:
        return await _pending(relaying) == 0

    try:
        await wait_for(published, timeout=10, what="the first pass")
        await asyncio.sleep(0.2)  # the pass has marked its row, and commits; the relay then waits for its poll
        async with relaying.sessions() as s, s.begin():
            enqueue(s, UserCreated(name="woken"), relaying.namespace, origin="api")
        await wait_for(published, timeout=10, what="the row published without a kick or a poll")
        assert await _published(relaying) == ["before", "woken"]
        async with relaying.sessions() as s, s.begin():  # a commit that enqueued nothing wakes nobody
            s.add(OutboxMessage(msg_id="not-enqueued", kind="evt", origin="api", subject="x", payload="{}"))
        await asyncio.sleep(1)
        assert await _pending(relaying) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
