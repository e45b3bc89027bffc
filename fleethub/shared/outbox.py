"""The transactional outbox: a message is committed in the same transaction as the state it announces.

`enqueue` adds the row inside the caller's transaction; `OutboxRelay` publishes unpublished rows
(with the row's message id as `Nats-Msg-Id`, so a crash between publish and mark is deduplicated)
and marks them. Consecutive rows bound for one stream go as one atomic batch where the server takes
them (nats-server 2.12+), else one acknowledged message at a time. Any number of relays may run: rows
are claimed with `FOR UPDATE SKIP LOCKED`. Each row names its origin, the service that wrote it, and a
relay claims only its own service's rows: a service's NATS identity may publish only its own subjects
(`fleethub.shared.bus.permissions`), so the auth service's relay never publishes a command.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, event, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from fleethub.shared.bus import BatchRefused, Bus, BusError
from fleethub.shared.db.models import OutboxMessage
from fleethub.shared.events import Message, subject_of, utcnow, wrap

log = logging.getLogger(__name__)

BATCH = 200
RETENTION = timedelta(hours=1)


def enqueue(session: AsyncSession, message: Message, namespace: str, msg_id: str | None = None, *,
            origin: str) -> str:
    """Add `message` to the outbox within `session`'s transaction, to be published by the relay of the
    service `origin`; returns its message id."""
    env = wrap(message, msg_id)
    session.sync_session.info[_PENDING] = True  # the relays of this process wake when it commits
    session.add(
        OutboxMessage(
            msg_id=env.id,
            kind=message.KIND,
            origin=origin,
            subject=subject_of(message, namespace),
            payload=env.model_dump_json(),
        )
    )
    return env.id


# The relays running in this process: a commit that enqueued wakes them (`_wake_relays`), so a relay needs
# no fast poll to publish at once; its poll only catches rows other processes wrote (a crashed replica's).
_running: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()
_PENDING = "fleethub.outbox.pending"  # in Session.info: this transaction enqueued


def _wake_relays(session: Session) -> None:
    if session.info.pop(_PENDING, False):
        for relay in list(_running):
            relay.kick()


def _wake_on_commit() -> None:
    if not event.contains(Session, "after_commit", _wake_relays):
        event.listen(Session, "after_commit", _wake_relays)


class OutboxRelay:
    """Publishes the committed outbox rows of service `origin`: at once after any commit in this process that
    enqueued (and on `kick()`), and by a poll for rows written elsewhere."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Bus, poll_interval: float = 0.25, *,
                 origin: str, also: tuple[str, ...] = ()) -> None:
        self._sessions = sessions
        self._bus = bus
        self.origin = origin
        # rows of other services this one may publish too (the api's commands include the culler's stops):
        # they are not left behind while the service that wrote them is down
        self._claims = (origin, *also)
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._last_cleanup = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def kick(self) -> None:
        """Publish pending rows now (a commit in this process that enqueued does it by itself)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:  # a commit in another thread (a sync session in a worker thread)
            loop.call_soon_threadsafe(self._wake.set)

    async def flush(self) -> int:
        """Publish every pending row this relay can claim; returns how many were published."""
        total = 0
        while True:
            async with self._sessions() as session, session.begin():
                rows = (
                    await session.execute(
                        select(OutboxMessage)
                        .where(OutboxMessage.published_at.is_(None), OutboxMessage.origin.in_(self._claims))
                        .order_by(OutboxMessage.id)
                        .limit(BATCH)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars().all()
                if not rows:
                    return total
                done: list[int] = []
                failed: BusError | None = None
                try:
                    for _, run in itertools.groupby(rows, key=lambda row: self._bus.stream_of(row.subject)):
                        await self._publish(list(run), done)
                except BusError as exc:  # the rows published before it are still marked, and committed
                    failed = exc
                if done:
                    await session.execute(
                        update(OutboxMessage).where(OutboxMessage.id.in_(done)).values(published_at=utcnow()),
                        execution_options={"synchronize_session": False},
                    )
                total += len(done)
            if failed is not None:
                raise failed

    async def _publish(self, run: Sequence[OutboxMessage], done: list[int]) -> None:
        """Publish `run` (rows of one stream, in order), adding each published row's id to `done`.

        As one atomic batch where the stream takes them: one acknowledgement for the run, where one at a
        time costs the client a round trip and ~0.3 ms of CPU per message (pipelining single publishes
        was only 1.5x faster, and a retried one lands behind those sent after it; a batch is stored
        whole or not at all, so order holds). One at a time otherwise, and when the server refuses
        the batch (say, the stream already has some of its ids: a pass that published but could not
        mark) or it fails (the rows before a row that cannot be published still go out, and are marked).
        """
        if len(run) > 1 and self._bus.takes_batches(self._bus.stream_of(run[0].subject)):
            try:
                await self._bus.publish_batch([(row.subject, row.payload.encode(), row.msg_id) for row in run])
                done.extend(row.id for row in run)
                return
            except BatchRefused as exc:
                log.info("outbox: a batch of %d was refused (%s); publishing them one by one", len(run), exc)
            except BusError as exc:  # one by one gets the rows before a bad one out (and marked)
                log.warning("outbox: a batch of %d failed (%s); publishing them one by one", len(run), exc)
        for row in run:
            await self._bus.publish_raw(row.subject, row.payload.encode(), row.msg_id)
            done.append(row.id)

    async def _cleanup(self) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                delete(OutboxMessage).where(OutboxMessage.published_at < utcnow() - RETENTION)
            )

    async def run(self) -> None:
        """Relay until cancelled."""
        loop = self._loop = asyncio.get_running_loop()
        _wake_on_commit()
        _running.add(self)
        try:
            await self._relay(loop)
        finally:
            _running.discard(self)
            self._loop = None

    async def _relay(self, loop: asyncio.AbstractEventLoop) -> None:
        me = asyncio.current_task()
        self._wake.set()  # a first pass at once: rows left from before this start
        while True:
            # Python 3.11's wait_for can swallow a cancellation that races its timeout: check by hand
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                if loop.time() - self._last_cleanup > 60:
                    self._last_cleanup = loop.time()
                    await self._cleanup()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # DB or NATS away: rows stay, the next pass retries
                log.warning("outbox relay pass failed: %s", exc)
                await asyncio.sleep(0.5)
                self._wake.set()  # tried again at once, not a poll later: rows wait while it fails
