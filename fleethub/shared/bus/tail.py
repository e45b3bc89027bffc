"""Reading the events stream from a point in time, for `fleethub events`: an ordered consumer (ephemeral,
no acks; the server drops it when the reader goes away), yielding each event's raw body in stream order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from fleethub.shared.bus.connection import Connection
from fleethub.shared.bus.kv import nats_errors


async def tail(conn: Connection, stream: str, subject: str, *, since: datetime | None,
               follow: bool) -> AsyncIterator[bytes]:
    """The bodies of the messages of `stream` on `subject`, from `since` (None: the stream's first); without
    `follow`, up to the last one stored when the reading began, else on and on as they are published.

    Raises:
        BusError: the stream can not be read (missing, or refused).
    """
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, filter_subject=subject, inactive_threshold=30.0,
                            deliver_policy=DeliverPolicy.ALL if since is None else DeliverPolicy.BY_START_TIME,
                            opt_start_time=None if since is None else since.astimezone(UTC))
    with nats_errors(f"reading stream {stream}"):
        sub = await conn.js.subscribe(subject, stream=stream, ordered_consumer=True, config=config,
                                      idle_heartbeat=2.0)
    try:
        with nats_errors(f"reading stream {stream}"):
            info = await sub.consumer_info()
        # a push consumer's pending count leaves out what it already pushed to us: with those, none at all
        if not follow and (info.num_pending or 0) + (info.delivered.consumer_seq or 0 if info.delivered else 0) == 0:
            return
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                # nats-py's next_msg can turn our cancellation (Ctrl-C) into a timeout: honour it here
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
                continue
            # heartbeats and flow control are handled (and left empty) by nats-py; a start time past the
            # last message makes some servers start at the first, so the time is checked here too
            if msg.data and (since is None or msg.metadata.timestamp >= since):
                yield bytes(msg.data)
            if not follow and msg.metadata.num_pending == 0:
                return
    finally:
        try:
            await asyncio.wait_for(sub.unsubscribe(), 2)
        except Exception:
            pass
