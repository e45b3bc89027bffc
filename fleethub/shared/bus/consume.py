"""Consuming: durable pull consumers whose handlers say ack, nak or term in their return value (a
`Decision`), and core subscriptions to events for in-process waiters."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError

from fleethub.shared.bus.connection import Connection
from fleethub.shared.events import Envelope, Message, UnknownMessage, unwrap

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """What a consumer handler decided about a message."""

    ACK = "ack"
    NAK = "nak"
    TERM = "term"


@dataclass(frozen=True)
class Decision:
    """A handler's return value: the outcome and, for a nak, the redelivery delay."""

    outcome: Outcome
    delay: float | None = None

    @classmethod
    def ack(cls) -> Decision:
        """Done: the effect is durable."""
        return cls(Outcome.ACK)

    @classmethod
    def nak(cls, delay: float | None = None) -> Decision:
        """Not now: redeliver after `delay` seconds."""
        return cls(Outcome.NAK, delay)

    @classmethod
    def term(cls) -> Decision:
        """Never: the message can not be handled (malformed or obsolete)."""
        return cls(Outcome.TERM)


@dataclass
class Delivery:
    """One delivered command or event, as a handler sees it."""

    envelope: Envelope
    message: Message
    num_delivered: int
    _msg: Msg

    async def in_progress(self) -> None:
        """Tell JetStream the handler is still working, extending the ack deadline."""
        await self._msg.in_progress()


Handler = Callable[[Delivery], Awaitable[Decision]]

FLOWING_WAIT = 0.05  # seconds a fetch lingers for more right after one that got messages


@dataclass(frozen=True)
class PullConsumer:
    """One durable pull consumer: where it reads, and how much it has in flight.

    Attributes:
        durable: the consumer's durable name.
        stream: the stream it reads.
        filter_subject: the subjects it takes.
        kind: "cmd" (every message, from the first) or "evt" (the ones published once it exists).
        concurrency: handlers running at once.
        ack_wait: seconds before an unsettled message is delivered again.
    """

    durable: str
    stream: str
    filter_subject: str
    kind: str
    concurrency: int = 16
    ack_wait: float = 30.0

    def config(self) -> ConsumerConfig:
        """The consumer's JetStream config."""
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=max(self.concurrency * 4, 256),
            deliver_policy=DeliverPolicy.ALL if self.kind == "cmd" else DeliverPolicy.NEW,
            filter_subject=self.filter_subject,
        )


async def consume(conn: Connection, consumer: PullConsumer, handler: Handler, *,
                  stop: asyncio.Event | None = None, bound: asyncio.Event | None = None) -> None:
    """Run `consumer` until `stop` is set (or forever); `bound` is set once the durable exists on the
    server (with DeliverPolicy.NEW, what is published from then on is not missed).

    Each message is validated and given to `handler` in its own task (at most `concurrency` at
    once); the handler's `Decision` acks, naks or terms it. A handler exception naks with a
    delay: a transient error never drops a command. Malformed messages are termed and logged.
    """
    durable, concurrency = consumer.durable, consumer.concurrency
    config = consumer.config()
    stop = stop or asyncio.Event()
    me = asyncio.current_task()
    sem = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    sub = None
    flowing = False  # the last fetch got messages: more are likely waiting
    try:
        while not stop.is_set():
            # nats-py's fetch can swallow a cancellation (it turns into a timeout): honour it here
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            if sub is None:
                try:
                    sub = await conn.js.pull_subscribe(consumer.filter_subject, durable=durable,
                                                       stream=consumer.stream, config=config)
                    if bound is not None:
                        bound.set()
                except Exception as exc:
                    log.warning("cannot bind consumer %s: %s", durable, exc)
                    await asyncio.sleep(0.5)
                    continue
            # nats-py's fetch of n > 1 that finds nothing waiting lingers until n came or the pull
            # expired, holding the first message back meanwhile (up to the whole second). So an idle
            # consumer waits for one message, which returns as it arrives; a flowing one takes what is
            # waiting (answered at once) or lingers briefly.
            batch = max(1, concurrency - len(tasks)) if flowing else 1
            try:
                msgs = await sub.fetch(batch, timeout=FLOWING_WAIT if flowing else 1.0)
            except (NatsTimeoutError, TimeoutError):
                # nothing came in time; under load nats-py can surface asyncio's own timeout (with an
                # empty message): the subscription is fine either way, re-binding would only churn
                flowing = False
                continue
            except APIError as exc:
                if exc.code == 400:
                    # a pull the server refused (its expiry, cut to the time left, fell below twice the
                    # heartbeat): the subscription is fine, and messages an earlier pull delivered are
                    # waiting in its queue; dropping it would strand them until ack_wait
                    log.debug("consumer %s: pull refused (%s); fetching again", durable, exc)
                    continue
                log.warning("consumer %s fetch failed (%s); re-binding", durable, exc)
                await _drop_pull(sub)
                sub = None
                continue
            except Exception as exc:  # lost pull request, reconnect, deleted consumer: re-bind
                log.warning("consumer %s fetch failed (%s); re-binding", durable, exc)
                await _drop_pull(sub)
                sub = None
                continue
            flowing = bool(msgs)
            for msg in msgs:
                await sem.acquire()
                task = asyncio.create_task(_handle(msg, consumer.kind, handler, sem))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:
                pass


async def _drop_pull(sub: Any) -> None:
    """Unsubscribe a pull subscription that failed (it is bound again on the next round)."""
    try:
        await sub.unsubscribe()
    except Exception:
        pass
    await asyncio.sleep(0.2)


async def _handle(msg: Msg, kind: str, handler: Handler, sem: asyncio.Semaphore) -> None:
    try:
        try:
            envelope, message = unwrap(msg.data, kind)
        except UnknownMessage as exc:
            log.error("terminating malformed message on %s: %s", msg.subject, exc)
            await msg.term()
            return
        delivery = Delivery(envelope, message, msg.metadata.num_delivered, msg)
        try:
            decision = await handler(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed for %s %s; will retry", envelope.type, envelope.id)
            decision = Decision.nak(1.0)
        if decision.outcome is Outcome.ACK:
            await msg.ack()
        elif decision.outcome is Outcome.NAK:
            await msg.nak(delay=decision.delay)
        else:
            await msg.term()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an ack lost to a disconnect: JetStream redelivers, handlers are idempotent
        log.warning("could not settle message %s: %s", msg.subject, exc)
    finally:
        sem.release()


async def subscribe_events(conn: Connection, subject: str,
                           callback: Callable[[Envelope, Message], Awaitable[None]]) -> Any:
    """A core (non-durable) subscription to events, for in-process waiters; at-most-once by design.

    Returns the subscription (its `unsubscribe()` ends it).
    """

    async def on_msg(msg: Msg) -> None:
        try:
            envelope, message = unwrap(msg.data, "evt")
        except UnknownMessage:
            return
        await callback(envelope, message)

    return await conn.nc.subscribe(subject, cb=on_msg)


async def serve(conn: Connection, subject: str, queue: str, answer: Callable[[bytes], Awaitable[bytes]]) -> Any:
    """Answer core requests on `subject` in queue group `queue` with `answer(body)`; an exception of
    `answer` is logged and left unanswered (the requester times out). Returns the subscription."""

    async def on_msg(msg: Msg) -> None:
        try:
            reply = await answer(msg.data)
        except Exception:
            log.exception("request on %s failed", subject)
            return
        if msg.reply:
            await msg.respond(reply)

    return await conn.nc.subscribe(subject, queue=queue, cb=on_msg)
