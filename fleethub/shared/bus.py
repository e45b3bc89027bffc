"""The one adapter between fleethub and NATS JetStream.

It connects with unlimited reconnects and a short ping interval, wires every background callback
to logs and to `Bus.healthy`, declares streams, consumers and KV buckets idempotently, publishes with
`Nats-Msg-Id` (retrying with the same id, so a retry is never a second message), one message or an
atomic batch of them, and runs pull consumers whose handlers say ack, nak or term in their return value.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from fleethub.shared.errors import BusError
from fleethub.shared.events import (
    Envelope,
    Message,
    UnknownMessage,
    commands_filter,
    events_filter,
    subject_of,
    unwrap,
    wrap,
)

log = logging.getLogger(__name__)


class BatchRefused(BusError):
    """An atomic batch was not stored: publish its messages one by one instead (deduplication drops any
    the stream already has)."""


def _pub_ack(data: bytes) -> dict[str, Any]:
    """JetStream's answer to a publish, as a dict (an unreadable one becomes an error)."""
    try:
        ack = json.loads(data)
    except ValueError:
        ack = None
    return ack if isinstance(ack, dict) else {"error": {"description": f"unreadable answer {data[:100]!r}"}}


# JetStream's error code for an atomic batch sent to a stream that does not allow atomic publishing
BATCH_DISABLED = 10174
BATCH_MAX = 1000  # the server's limit of messages in one atomic batch
BATCHES_RETRY = 60.0  # seconds before batches are tried again on a stream that refused them as such

EVENTS_MAX_AGE = 7 * 24 * 3600.0
DUPLICATE_WINDOW = 120.0
REGISTRY_TTL = 6.0


@dataclass(frozen=True)
class Names:
    """Names of the streams, buckets and durable consumers of one namespace."""

    namespace: str

    @property
    def cmd_stream(self) -> str:
        """Work-queue stream of commands."""
        return f"{self.namespace.upper()}_CMD"

    @property
    def evt_stream(self) -> str:
        """Limits-retention stream of events (a public interface)."""
        return f"{self.namespace.upper()}_EVENTS"

    @property
    def routes_bucket(self) -> str:
        """KV bucket of the route table."""
        return f"{self.namespace}_routes"

    @property
    def registry_bucket(self) -> str:
        """KV bucket (with TTL) of live auth/api replicas."""
        return f"{self.namespace}_registry"


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


class Bus:
    """A NATS connection with JetStream, owned by a service's lifespan.

    Args:
        servers: NATS URL(s), comma-separated.
        namespace: prefix of subjects, streams and buckets.
        name: client name shown by the server (service and replica).
    """

    def __init__(self, servers: str, namespace: str, name: str) -> None:
        self.servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.namespace = namespace
        self.names = Names(namespace)
        self.name = name
        self.healthy = asyncio.Event()
        self.reconnected = asyncio.Event()
        # called on every reconnect (core subscriptions may have missed messages meanwhile)
        self.on_reconnect: list[Callable[[], None]] = []
        self.closed = asyncio.Event()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._kv: dict[str, KeyValue] = {}
        self._closing = False
        # streams that take atomic batches (nats-server 2.12 and later keeps `allow_atomic`; older ones
        # drop it from the config they store, and their streams are published to one message at a time)
        self._atomic: set[str] = set()
        self._batches_retry: dict[str, float] = {}  # stream -> loop time to try batches again

    @property
    def nc(self) -> NatsClient:
        """The core NATS client."""
        if self._nc is None:
            raise BusError("bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        if self._js is None:
            raise BusError("bus is not connected")
        return self._js

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, retrying until `timeout`; afterwards reconnect forever."""

        async def error_cb(exc: Exception) -> None:
            log.warning("nats error: %s", exc)

        async def disconnected_cb() -> None:
            self.healthy.clear()
            log.warning("nats disconnected")

        async def reconnected_cb() -> None:
            self.healthy.set()
            self.reconnected.set()
            for callback in self.on_reconnect:
                callback()
            log.info("nats reconnected")

        async def closed_cb() -> None:
            self.healthy.clear()
            self.closed.set()
            if self._closing:  # our own close (shutdown): not an error
                log.info("nats connection closed")
            else:
                log.error("nats connection closed")

        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                self._nc = await nats.connect(
                    servers=self.servers,
                    name=self.name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    ping_interval=2,
                    max_outstanding_pings=3,
                    connect_timeout=2,
                    allow_reconnect=True,
                    error_cb=error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                    closed_cb=closed_cb,
                )
                break
            except Exception as exc:  # nats raises several unrelated types for "not there yet"
                if asyncio.get_running_loop().time() > deadline:
                    raise BusError(f"cannot connect to NATS at {','.join(self.servers)}: {exc}") from None
                await asyncio.sleep(0.2)
        self._js = self._nc.jetstream(timeout=5)
        self.healthy.set()

    async def close(self) -> None:
        """Drain and close the connection."""
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), 5)
            except Exception:
                await self._nc.close()
        self._nc = None
        self._js = None
        self._kv.clear()

    async def _ensure_stream(self, config: StreamConfig) -> None:
        name: str = config.name  # type: ignore[assignment]
        info = None
        try:
            await self.js.stream_info(name)
        except NotFoundError:
            try:
                info = await self.js.add_stream(config)
            except BadRequestError:
                pass  # created concurrently by another replica
        if info is None:
            info = await self.js.update_stream(config)
        self._batches_retry.pop(name, None)
        if info.config.allow_atomic:
            self._atomic.add(name)
        else:
            self._atomic.discard(name)

    def stream_of(self, subject: str) -> str | None:
        """The stream a subject of this namespace is stored in (None: no stream of ours takes it)."""
        prefix, _, rest = subject.partition(".")
        kind = rest.split(".", 1)[0] if prefix == self.namespace else ""
        return self.names.cmd_stream if kind == "cmd" else self.names.evt_stream if kind == "evt" else None

    def takes_batches(self, stream: str | None) -> bool:
        """Whether `stream` takes atomic batches (known once `ensure_topology` ran; a stream found not to
        take them while running is tried again `BATCHES_RETRY` seconds later)."""
        if stream is None:
            return False
        if stream in self._atomic:
            return True
        retry = self._batches_retry.get(stream)
        if retry is None or asyncio.get_running_loop().time() < retry:
            return False
        del self._batches_retry[stream]
        self._atomic.add(stream)
        return True

    async def ensure_topology(self, timeout: float = 15.0) -> None:
        """Declare the command and event streams and the KV buckets (idempotent, any replica may run it).

        Retries while JetStream is not answering yet (a server that just started, or a reconnect).
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                await self._declare()
                return
            except Exception as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise BusError(f"cannot declare JetStream streams and buckets: {exc}") from None
                await asyncio.sleep(0.2)

    async def _declare(self) -> None:
        n = self.names
        await self._ensure_stream(
            StreamConfig(
                name=n.cmd_stream,
                subjects=[commands_filter(self.namespace)],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                discard=DiscardPolicy.NEW,
                duplicate_window=DUPLICATE_WINDOW,
                allow_atomic=True,
            )
        )
        await self._ensure_stream(
            StreamConfig(
                name=n.evt_stream,
                subjects=[events_filter(self.namespace)],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=EVENTS_MAX_AGE,
                duplicate_window=DUPLICATE_WINDOW,
                allow_atomic=True,
            )
        )
        await self.kv(n.routes_bucket, create=KeyValueConfig(bucket=n.routes_bucket, history=1, storage=StorageType.FILE))
        await self.kv(
            n.registry_bucket,
            create=KeyValueConfig(bucket=n.registry_bucket, history=1, ttl=REGISTRY_TTL, storage=StorageType.MEMORY),
        )

    async def kv(self, bucket: str, create: KeyValueConfig | None = None) -> KeyValue:
        """A KV bucket handle, creating the bucket from `create` if it does not exist.

        With `create`, the bucket's existence is checked even when a handle is cached: an in-memory
        bucket (the registry) is gone after a NATS restart, and `ensure_topology` must bring it back.
        """
        if bucket in self._kv and create is None:
            return self._kv[bucket]
        try:
            handle = await self.js.key_value(bucket)
        except (NotFoundError, BadRequestError):
            if create is None:
                raise BusError(f"KV bucket {bucket} does not exist") from None
            handle = await self.js.create_key_value(config=create)
        self._kv[bucket] = handle
        return handle

    async def routes(self) -> KeyValue:
        """The route table bucket."""
        return await self.kv(self.names.routes_bucket)

    async def registry(self) -> KeyValue:
        """The service registry bucket."""
        return await self.kv(self.names.registry_bucket)

    async def routes_snapshot(self) -> dict[str, bytes]:
        """Every key of the route bucket with its current value (deleted keys left out)."""
        kv = await self.routes()
        try:
            keys = await kv.keys()
        except NoKeysError:
            return {}
        out: dict[str, bytes] = {}
        for key in keys:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:  # deleted since listed
                continue
            if entry is not None and entry.value:
                out[key] = entry.value
        return out

    async def publish_raw(self, subject: str, payload: bytes, msg_id: str, attempts: int = 5) -> None:
        """Publish to JetStream and wait for the ack, retrying with the same `Nats-Msg-Id`.

        Raises:
            BusError: no ack after `attempts` tries.
        """
        delay = 0.1
        for attempt in range(attempts):
            try:
                await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
                return
            except Exception as exc:  # timeouts and no-responders are ambiguous: retry, dedup makes it safe
                if attempt == attempts - 1:
                    raise BusError(f"publish to {subject} failed: {exc}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def publish_batch(self, items: Sequence[tuple[str, bytes, str]], attempts: int = 5) -> None:
        """Publish `items` (subject, payload, message id; 2 to `BATCH_MAX` of them, all on one stream that
        `takes_batches`) as one atomic batch: the stream stores all of them, in order, or none.

        The first message is a request: a server that batches answers it with an empty reply (one that
        does not stores it as an ordinary message, and the rest is not sent). The ones between are
        not requests, and the last one's acknowledgement covers the batch. A try that gets no answer (a
        timeout, the connection down) is made again whole, under a new batch id. Nothing is sent while
        the connection is down: nats-py would hold it and send it after reconnecting, perhaps after
        the duplicate window.

        Raises:
            BatchRefused: the server answered with an error, or does not batch. The batch is not stored
                (its first message may be, as an ordinary one): the stream already has one of the ids
                (a try that was stored but not acknowledged, or rows published before), atomic
                publishing is off, too many batches are in flight, a message is refused. Publishing
                the items one by one is then right: deduplication drops what the stream has.
            BusError: no answer after `attempts` tries.
        """
        if not 1 < len(items) <= BATCH_MAX:
            raise ValueError(f"an atomic batch holds 2 to {BATCH_MAX} messages, not {len(items)}")
        stream = self.stream_of(items[0][0]) or ""
        last = len(items)
        delay = 0.1
        problem = ""
        for attempt in range(attempts):
            batch_id = secrets.token_hex(11)

            def headers(seq: int, msg_id: str) -> dict[str, str]:
                h = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(seq), "Nats-Msg-Id": msg_id}
                if seq == last:
                    h["Nats-Batch-Commit"] = "1"
                return h

            try:
                if not self.nc.is_connected:
                    raise BusError("not connected to NATS")
                subject, payload, msg_id = items[0]
                started = await self.nc.request(subject, payload, timeout=5, headers=headers(1, msg_id))
                if started.data:  # an acknowledgement or an error: the server did not start a batch
                    ack = _pub_ack(started.data)
                else:
                    for seq, (subject, payload, msg_id) in enumerate(items[1:-1], 2):
                        await self.nc.publish(subject, payload, headers=headers(seq, msg_id))
                    subject, payload, msg_id = items[-1]
                    committed = await self.nc.request(subject, payload, timeout=5, headers=headers(last, msg_id))
                    ack = _pub_ack(committed.data)
            except Exception as exc:  # timeouts and no-responders are ambiguous: the next try tells
                problem = str(exc) or type(exc).__name__
                if attempt < attempts - 1:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                continue
            error = ack.get("error")
            if error is None and ack.get("batch") == batch_id and ack.get("count") == last:
                return
            if error is None or (isinstance(error, dict) and error.get("err_code") == BATCH_DISABLED):
                self._batches_off(stream, f"{ack}")
                raise BatchRefused(f"{stream} does not take atomic batches")
            raise BatchRefused(str(error.get("description", error) if isinstance(error, dict) else error))
        raise BusError(f"atomic batch of {last} to {items[0][0]}… failed: {problem}")

    def _batches_off(self, stream: str, answer: str) -> None:
        """`stream` turned out not to take batches: publish to it one at a time, and try again later (the
        stream's config may be changed back, or the server upgraded)."""
        if stream in self._atomic:
            log.warning("stream %s does not take atomic batches (answer: %.200s); publishing one message at "
                        "a time, and trying batches again in %.0f s", stream, answer, BATCHES_RETRY)
        self._atomic.discard(stream)
        self._batches_retry[stream] = asyncio.get_running_loop().time() + BATCHES_RETRY

    async def publish(self, message: Message, msg_id: str | None = None) -> Envelope:
        """Wrap `message` in an envelope and publish it durably; returns the envelope."""
        env = wrap(message, msg_id)
        await self.publish_raw(subject_of(message, self.namespace), env.model_dump_json().encode(), env.id)
        return env

    async def consume(
        self,
        *,
        durable: str,
        filter_subject: str,
        kind: str,
        handler: Handler,
        concurrency: int = 16,
        ack_wait: float = 30.0,
        stop: asyncio.Event | None = None,
        bound: asyncio.Event | None = None,
    ) -> None:
        """Run a durable pull consumer until `stop` is set (or forever); `bound` is set once the durable
        exists on the server (with DeliverPolicy.NEW, what is published from then on is not missed).

        Each message is validated and given to `handler` in its own task (at most `concurrency` at
        once); the handler's `Decision` acks, naks or terms it. A handler exception naks with a
        delay: a transient error never drops a command. Malformed messages are termed and logged.
        """
        stream = self.names.cmd_stream if kind == "cmd" else self.names.evt_stream
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=max(concurrency * 4, 256),
            deliver_policy=DeliverPolicy.ALL if kind == "cmd" else DeliverPolicy.NEW,
            filter_subject=filter_subject,
        )
        stop = stop or asyncio.Event()
        me = asyncio.current_task()
        sem = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        sub = None
        try:
            while not stop.is_set():
                # nats-py's fetch can swallow a cancellation (it turns into a timeout): honour it here
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError
                if sub is None:
                    try:
                        sub = await self.js.pull_subscribe(filter_subject, durable=durable, stream=stream, config=config)
                        if bound is not None:
                            bound.set()
                    except Exception as exc:
                        log.warning("cannot bind consumer %s: %s", durable, exc)
                        await asyncio.sleep(0.5)
                        continue
                batch = max(1, concurrency - len(tasks))
                try:
                    msgs = await sub.fetch(batch, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    # nothing came in time; under load nats-py can surface asyncio's own timeout (with an
                    # empty message): the subscription is fine either way, re-binding would only churn
                    continue
                except APIError as exc:
                    if exc.code == 400:
                        # a pull the server refused (its expiry, cut to the time left, fell below twice the
                        # heartbeat): the subscription is fine, and messages an earlier pull delivered are
                        # waiting in its queue; dropping it would strand them until ack_wait
                        log.debug("consumer %s: pull refused (%s); fetching again", durable, exc)
                        continue
                    log.warning("consumer %s fetch failed (%s); re-binding", durable, exc)
                    sub = await self._drop_pull(sub)
                    continue
                except Exception as exc:  # lost pull request, reconnect, deleted consumer: re-bind
                    log.warning("consumer %s fetch failed (%s); re-binding", durable, exc)
                    sub = await self._drop_pull(sub)
                    continue
                for msg in msgs:
                    await sem.acquire()
                    task = asyncio.create_task(self._handle(msg, kind, handler, sem))
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

    @staticmethod
    async def _drop_pull(sub: Any) -> Any:
        """Unsubscribe a pull subscription that failed (it is bound again on the next round)."""
        try:
            await sub.unsubscribe()
        except Exception:
            pass
        await asyncio.sleep(0.2)
        return None

    async def _handle(self, msg: Msg, kind: str, handler: Handler, sem: asyncio.Semaphore) -> None:
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

    async def subscribe_events(self, subject: str, callback: Callable[[Envelope, Message], Awaitable[None]]) -> Any:
        """A core (non-durable) subscription to events, for in-process waiters; at-most-once by design."""

        async def on_msg(msg: Msg) -> None:
            try:
                envelope, message = unwrap(msg.data, "evt")
            except UnknownMessage:
                return
            await callback(envelope, message)

        return await self.nc.subscribe(subject, cb=on_msg)
