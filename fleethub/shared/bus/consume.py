"""Consuming: durable pull consumers whose handlers say ack, nak or term in their return value (a
`Decision`), and core subscriptions to events for in-process waiters.

What a consumer does when a message can not be handled:
- malformed (bad JSON or envelope, unknown type or version, a payload that fails validation, a subject that
  does not match its payload, a command over `COMMAND_MAX_BYTES`): a dead letter is recorded and the
  message is TERMed at once;
- the handler raised a transient error (`fleethub.shared.transient`: NATS or PostgreSQL away): NAK with an
  exponential backoff, without a bound (the dependency comes back; a command is never dropped for it);
- the handler raised `GiveUp`: a dead letter is recorded and the message is TERMed at once;
- the handler raised anything else (a poison message): NAK with backoff until the message was delivered
  `max_failures` times, then a dead letter is recorded and the message is TERMed; the queue goes on.
A dead letter that can not be recorded (PostgreSQL away) leaves the message to be delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from fleethub.shared.logging import request_scope, sane_request_id
from fleethub.shared.transient import transient

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


class GiveUp(Exception):
    """Raised by a handler that will never handle this message (a webhook past its retry limit): the
    message becomes a dead letter (with this exception's text as the reason) and is TERMed."""

FLOWING_WAIT = 0.05  # seconds a fetch lingers for more right after one that got messages
PAYLOAD_KEPT = 16 * 1024  # bytes of a dead message's body a dead letter keeps (its size is recorded)
# a command is a few hundred bytes plus its spawn's options; one this big is an attack or a bug (events
# have no limit of ours: a proxy's activity batch grows with the number of active routes)
COMMAND_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """A message a consumer gave up on, with why.

    Attributes:
        durable: the consumer that gave up.
        stream: the stream the message is stored in.
        subject: the message's subject.
        stream_seq: its sequence in the stream.
        num_delivered: how many times it was delivered.
        reason: why it was given up ("malformed: …" or "handler failed: …").
        payload: its body, cut to `PAYLOAD_KEPT` bytes.
        size: the body's full size in bytes.
        message: the decoded message, when it decoded (a poison message does; a malformed one does not).
    """

    durable: str
    stream: str
    subject: str
    stream_seq: int
    num_delivered: int
    reason: str
    payload: bytes
    size: int
    message: Message | None = None


DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]
"""Records a dead letter durably (and does what else giving up on it means, e.g. marking a spawn failed);
raising leaves the message to be delivered again."""


@dataclass(frozen=True)
class Retry:
    """How failures are retried: NAK delays growing from `first` by doubling up to `cap` seconds, and how
    many deliveries a message whose handler fails with a non-transient error gets before it is dead."""

    first: float = 0.5
    cap: float = 15.0
    max_failures: int = 5

    def delay(self, num_delivered: int) -> float:
        """The NAK delay after the `num_delivered`-th delivery failed."""
        return float(min(self.cap, self.first * 2 ** min(max(num_delivered - 1, 0), 16)))


async def _log_only(letter: DeadLetter) -> None:
    log.error("dead letter on %s (consumer %s, seq %d): %s", letter.subject, letter.durable, letter.stream_seq,
              letter.reason)


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
        retry: NAK delays and the poison bound.
        dead_letter: records what the consumer gives up on (default: only logged).
        max_ack_pending: messages delivered and not yet settled, at most (None: from `concurrency`);
            1 delivers strictly in stream order, a message being retried holding back those after it.
    """

    durable: str
    stream: str
    filter_subject: str
    kind: str
    concurrency: int = 16
    ack_wait: float = 30.0
    retry: Retry = Retry()
    dead_letter: DeadLetterSink = _log_only
    max_ack_pending: int | None = None

    def config(self) -> ConsumerConfig:
        """The consumer's JetStream config."""
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending or max(self.concurrency * 4, 256),
            deliver_policy=DeliverPolicy.ALL if self.kind == "cmd" else DeliverPolicy.NEW,
            filter_subject=self.filter_subject,
        )


async def _idle_fetch(sub: Any, timeout: float, stop: asyncio.Event, woken: asyncio.Event) -> list[Msg]:
    """One message, waiting up to `timeout` on the server (a long poll costs nothing while none comes), or none
    as soon as `stop` or `woken` is set. A message the abandoned pull brings later waits in the subscription's
    queue, where the next fetch takes it first."""
    woken.clear()
    fetch = asyncio.ensure_future(sub.fetch(1, timeout=timeout))
    interrupt = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(woken.wait())]
    try:
        await asyncio.wait({fetch, *interrupt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in interrupt:
            waiter.cancel()
        if not fetch.done():
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
    if fetch.cancelled():
        return []
    result: list[Msg] = fetch.result()  # raises what the fetch raised, handled as a short fetch's
    return result


async def consume(conn: Connection, consumer: PullConsumer, handler: Handler, *,
                  stop: asyncio.Event | None = None, bound: asyncio.Event | None = None) -> None:
    """Run `consumer` until `stop` is set (or forever); `bound` is set once the durable exists on the
    server (with DeliverPolicy.NEW, what is published from then on is not missed).

    Each message is validated and given to `handler` in its own task (at most `concurrency` at
    once); the handler's `Decision` acks, naks or terms it. Failures are handled as the module says:
    a transient error never drops a command, a poison or malformed message ends in a dead letter.
    """
    durable, concurrency = consumer.durable, consumer.concurrency
    config = consumer.config()
    stop = stop or asyncio.Event()
    me = asyncio.current_task()
    sem = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    sub = None
    flowing = False  # the last fetch got messages: more are likely waiting
    woken = asyncio.Event()  # a reconnect: the server forgot the pending pull, an idle fetch makes a new one
    conn.on_reconnect.append(woken.set)
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
                if flowing or conn.idle_fetch <= 1.0:
                    msgs = await sub.fetch(batch, timeout=FLOWING_WAIT if flowing else 1.0)
                else:
                    msgs = await _idle_fetch(sub, conn.idle_fetch, stop, woken)
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
                if bound is not None:
                    bound.clear()  # not bound until the next pull_subscribe succeeds (readiness)
                continue
            except Exception as exc:  # lost pull request, reconnect, deleted consumer: re-bind
                log.warning("consumer %s fetch failed (%s); re-binding", durable, exc)
                await _drop_pull(sub)
                sub = None
                if bound is not None:
                    bound.clear()  # not bound until the next pull_subscribe succeeds (readiness)
                continue
            flowing = bool(msgs)
            for msg in msgs:
                await sem.acquire()
                task = asyncio.create_task(_handle(msg, consumer, handler, sem))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        with contextlib.suppress(ValueError):
            conn.on_reconnect.remove(woken.set)
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


def _decode(msg: Msg, kind: str) -> tuple[Envelope, Message]:
    """The message's envelope and payload, its subject checked against the payload.

    Raises:
        UnknownMessage: malformed, or a subject that does not match (another user's, or not decodable).
    """
    envelope, message = unwrap(msg.data, kind)
    if not msg.subject.endswith(f".{kind}.{message.subject_tail()}"):
        raise UnknownMessage(f"subject does not match its {envelope.type} payload")
    return envelope, message


def _letter(msg: Msg, consumer: PullConsumer, reason: str, message: Message | None) -> DeadLetter:
    data = bytes(msg.data or b"")
    meta = msg.metadata
    return DeadLetter(durable=consumer.durable, stream=meta.stream, subject=msg.subject,
                      stream_seq=meta.sequence.stream, num_delivered=meta.num_delivered, reason=reason[:2000],
                      payload=data[:PAYLOAD_KEPT], size=len(data), message=message)


async def _give_up(msg: Msg, consumer: PullConsumer, letter: DeadLetter) -> Decision:
    """Record `letter` and TERM; if it can not be recorded, deliver the message again later."""
    try:
        await consumer.dead_letter(letter)
    except Exception as exc:
        log.warning("consumer %s: dead letter for %s not recorded (%s); will deliver it again",
                    consumer.durable, msg.subject, exc)
        return Decision.nak(consumer.retry.delay(letter.num_delivered))
    log.error("consumer %s: dead letter for %s (seq %d, delivered %d times): %s", consumer.durable, msg.subject,
              letter.stream_seq, letter.num_delivered, letter.reason)
    return Decision.term()


async def _decide(msg: Msg, consumer: PullConsumer, handler: Handler) -> Decision:
    try:
        envelope, message = _decode(msg, consumer.kind)
    except UnknownMessage as exc:
        return await _give_up(msg, consumer, _letter(msg, consumer, f"malformed: {exc}", None))
    # the handler's logs, and what it publishes, carry the request id of the request that caused the message
    with request_scope(sane_request_id(envelope.request_id)):
        return await _decide_valid(msg, consumer, handler, envelope, message)


async def _decide_valid(msg: Msg, consumer: PullConsumer, handler: Handler, envelope: Envelope,
                        message: Message) -> Decision:
    if consumer.kind == "cmd" and len(msg.data) > COMMAND_MAX_BYTES:
        reason = f"malformed: a {envelope.type} command of {len(msg.data)} bytes (the limit is {COMMAND_MAX_BYTES})"
        return await _give_up(msg, consumer, _letter(msg, consumer, reason, message))
    num_delivered = msg.metadata.num_delivered
    try:
        return await handler(Delivery(envelope, message, num_delivered, msg))
    except asyncio.CancelledError:
        raise
    except GiveUp as exc:
        return await _give_up(msg, consumer, _letter(msg, consumer, f"given up: {exc}", message))
    except Exception as exc:
        retry = consumer.retry
        if transient(exc):
            log.warning("handler for %s %s failed (%s: %s); retrying", envelope.type, envelope.id,
                        type(exc).__name__, exc)
            return Decision.nak(retry.delay(num_delivered))
        if num_delivered < retry.max_failures:
            log.exception("handler for %s %s failed (delivery %d of at most %d); will retry", envelope.type,
                          envelope.id, num_delivered, retry.max_failures)
            return Decision.nak(retry.delay(num_delivered))
        reason = f"handler failed {num_delivered} times: {type(exc).__name__}: {exc}"
        return await _give_up(msg, consumer, _letter(msg, consumer, reason, message))


async def _handle(msg: Msg, consumer: PullConsumer, handler: Handler, sem: asyncio.Semaphore) -> None:
    try:
        decision = await _decide(msg, consumer, handler)
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
        with request_scope(sane_request_id(envelope.request_id)):
            await callback(envelope, message)

    return await conn.nc.subscribe(subject, cb=on_msg)


async def serve(conn: Connection, subject: str, queue: str, answer: Callable[[bytes], Awaitable[bytes]]) -> Any:
    """Answer core requests on `subject` in queue group `queue` with `answer(body)`; an exception of
    `answer` is logged and left unanswered (the requester times out). Returns the subscription, once the
    server has it (connected)."""

    async def on_msg(msg: Msg) -> None:
        try:
            reply = await answer(msg.data)
        except Exception:
            log.exception("request on %s failed", subject)
            return
        if msg.reply:
            await msg.respond(reply)

    sub = await conn.nc.subscribe(subject, queue=queue, cb=on_msg)
    with contextlib.suppress(Exception):  # disconnected: the subscription is sent on reconnect
        await conn.nc.flush(timeout=5)  # the server has it: a request sent after we return finds us
    return sub
