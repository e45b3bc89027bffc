"""`Bus`, what a service holds: one connection with its namespace's topology, publishing, consuming, and
the route and registry stores, each delegated to the module of its concern."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from fleethub.shared.bus import applied as acks
from fleethub.shared.bus import consume as consuming
from fleethub.shared.bus import presence
from fleethub.shared.bus import publish as publishing
from fleethub.shared.bus import tail as tailing
from fleethub.shared.bus.connection import Connection, Credentials
from fleethub.shared.bus.consume import DeadLetterSink, Handler, PullConsumer, Retry
from fleethub.shared.bus.permissions import TABLE
from fleethub.shared.bus.registrystore import RegistryStore
from fleethub.shared.bus.routestore import RouteStore
from fleethub.shared.bus.topology import Names, Role, Topology
from fleethub.shared.events import Envelope, Message, subject_of, wrap


class Bus:
    """A NATS connection with JetStream, owned by a service's lifespan.

    Args:
        servers: NATS URL(s), comma-separated.
        namespace: prefix of subjects, streams and buckets.
        name: client name shown by the server (service and replica).
        credentials: the identity (its inbox prefix, and, with an nkey seed, what it declares or waits
            for: its row of `permissions.TABLE`), its nkey seed and TLS files; without a seed it declares
            everything (a server without authorization refuses nothing).
        replicas: replicas of the streams and buckets it declares (`nats_replicas`).

    Attributes:
        routes: the route table (`RouteStore`).
        registry: the service registry (`RegistryStore`).
        healthy: set while connected.
        reconnected: set on every reconnect (whoever waits on it clears it).
        closed: set once the connection is closed for good.
    """

    def __init__(self, servers: str, namespace: str, name: str, credentials: Credentials | None = None, *,
                 replicas: int = 1) -> None:
        self.connection = Connection(servers, name, credentials)
        self.namespace = namespace
        self.names = Names(namespace, replicas)
        identity, nkey = self.connection.credentials.identity, self.connection.credentials.nkey_file
        role = None
        # with credentials, the server lets an identity declare only what its grant says, so it waits for
        # the rest; an anonymous connection (a server without authorization) declares everything, as before
        if identity is not None and nkey is not None:
            grant = TABLE[identity]
            role = Role(declares=frozenset(grant.declares), updates=grant.updates, needs=frozenset(grant.needs))
        self.topology = Topology(self.connection, self.names, role)
        self.routes = RouteStore(self.topology)
        self.registry = RegistryStore(self.topology)
        self.healthy = self.connection.healthy
        self.reconnected = self.connection.reconnected
        self.closed = self.connection.closed
        # every durable consumer this connection runs, with an event set while it is bound (readiness)
        self.consumers: dict[str, asyncio.Event] = {}

    @property
    def servers(self) -> list[str]:
        """The NATS URLs."""
        return self.connection.servers

    @property
    def name(self) -> str:
        """The client name."""
        return self.connection.name

    @property
    def on_reconnect(self) -> list[Callable[[], None]]:
        """Called on every reconnect (core subscriptions may have missed messages meanwhile)."""
        return self.connection.on_reconnect

    @on_reconnect.setter
    def on_reconnect(self, callbacks: list[Callable[[], None]]) -> None:
        self.connection.on_reconnect = callbacks

    @property
    def nc(self) -> NatsClient:
        """The core NATS client (for tests that inspect the server; services use the methods)."""
        return self.connection.nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (for tests that inspect the server; services use the methods)."""
        return self.connection.js

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, retrying until `timeout`; afterwards reconnect forever."""
        await self.connection.connect(timeout)

    async def close(self) -> None:
        """Drain and close the connection."""
        await self.connection.close()
        self.topology.forget()

    async def ensure_topology(self, timeout: float | None = None) -> None:
        """Declare the streams and KV buckets this identity declares (idempotent, any replica may run it),
        and wait for those it only uses (see `Topology.ensure`)."""
        await self.topology.ensure(timeout)

    def stream_of(self, subject: str) -> str | None:
        """The stream a subject of this namespace is stored in (None: no stream of ours takes it)."""
        return self.topology.stream_of(subject)

    def takes_batches(self, stream: str | None) -> bool:
        """Whether `stream` takes atomic batches (see `Topology.takes_batches`)."""
        return self.topology.takes_batches(stream)

    async def publish_raw(self, subject: str, payload: bytes, msg_id: str, attempts: int = 5) -> None:
        """Publish to JetStream and wait for the ack, retrying with the same `Nats-Msg-Id`.

        Raises:
            BusError: no ack after `attempts` tries.
        """
        await publishing.publish_raw(self.connection, subject, payload, msg_id, attempts=attempts)

    async def publish_batch(self, items: Sequence[tuple[str, bytes, str]], attempts: int = 5) -> None:
        """Publish `items` (subject, payload, message id) as one atomic batch (see `publish.publish_batch`).

        Raises:
            BatchRefused: not stored as a batch; publish the items one by one.
            BusError: no answer after `attempts` tries.
        """
        await publishing.publish_batch(self.connection, self.topology, items, attempts=attempts)

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
        dead_letter: DeadLetterSink | None = None,
        retry: Retry | None = None,
        max_ack_pending: int | None = None,
    ) -> None:
        """Run a durable pull consumer until `stop` is set (or forever); `bound` is set once the durable
        exists on the server (with DeliverPolicy.NEW, what is published from then on is not missed).

        Each message is validated and given to `handler` in its own task (at most `concurrency` at
        once); the handler's `Decision` acks, naks or terms it. A transient handler error naks with a
        growing delay (a command is never dropped for it); a malformed message, or one whose handler
        fails otherwise `retry.max_failures` times, is given to `dead_letter` and termed (see `consume`).
        `max_ack_pending` 1 delivers in stream order (see `PullConsumer`).
        """
        stream = self.names.cmd_stream if kind == "cmd" else self.names.evt_stream
        consumer = PullConsumer(durable=durable, stream=stream, filter_subject=filter_subject, kind=kind,
                                concurrency=concurrency, ack_wait=ack_wait, retry=retry or Retry(),
                                max_ack_pending=max_ack_pending)
        if dead_letter is not None:
            consumer = dataclasses.replace(consumer, dead_letter=dead_letter)
        bound = bound or asyncio.Event()
        self.consumers[durable] = bound
        try:
            await consuming.consume(self.connection, consumer, handler, stop=stop, bound=bound)
        finally:
            bound.clear()

    async def consumer_state(self, kind: str, durable: str) -> tuple[int, int, int]:
        """The durable consumer's messages waiting, delivered but not settled, and redelivered (JetStream
        consumer info: num_pending, num_ack_pending, num_redelivered).

        Raises:
            BusError: NATS did not answer.
        """
        from fleethub.shared.bus.kv import nats_errors

        stream = self.names.cmd_stream if kind == "cmd" else self.names.evt_stream
        with nats_errors(f"consumer info of {durable}"):
            info = await self.js.consumer_info(stream, durable)
        return int(info.num_pending or 0), int(info.num_ack_pending or 0), int(info.num_redelivered or 0)

    async def drop_durable(self, kind: str, durable: str) -> bool:
        """Delete the durable consumer `durable` of the `kind` ("cmd" or "evt") stream; False if there was none."""
        stream = self.names.cmd_stream if kind == "cmd" else self.names.evt_stream
        try:
            return bool(await self.js.delete_consumer(stream, durable))
        except NotFoundError:
            return False

    def tail_events(self, *, since: datetime | None, follow: bool) -> AsyncIterator[bytes]:
        """The raw bodies of the stored events from `since` (None: the first), in order; with `follow`, on and
        on as they are published (see `tail.tail`)."""
        return tailing.tail(self.connection, self.names.evt_stream, f"{self.namespace}.evt.>", since=since,
                            follow=follow)

    async def subscribe_events(self, subject: str, callback: Callable[[Envelope, Message], Awaitable[None]]) -> Any:
        """A core (non-durable) subscription to events, for in-process waiters; at-most-once by design."""
        return await consuming.subscribe_events(self.connection, subject, callback)

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """A core request (answered by whoever serves `subject`); returns the answer's body.

        Raises:
            BusError: nobody answered (`BusTimeout`: not in time).
        """
        from fleethub.shared.bus.kv import nats_errors

        with nats_errors(f"request on {subject}"):
            msg = await self.connection.nc.request(subject, payload, timeout=timeout)
        return bytes(msg.data)

    async def serve(self, subject: str, queue: str, answer: Callable[[bytes], Awaitable[bytes]]) -> Any:
        """Answer core requests on `subject` (one member of `queue` takes each) with `answer(body)`.

        Returns the subscription (its `unsubscribe()` ends it).
        """
        return await consuming.serve(self.connection, subject, queue, answer)

    async def answer_pings(self, info: presence.ReplicaInfo) -> Any:
        """Answer `fleethub status`'s pings with `info` (see `presence`); returns the subscription."""
        return await presence.answer_pings(self.connection, self.namespace, info)

    async def gather_replicas(self, wait: float = 1.0) -> list[presence.ReplicaInfo]:
        """The replicas that answer a status ping within `wait` seconds.

        Raises:
            BusError: NATS is away or refused the request.
        """
        return await presence.gather_replicas(self.connection, self.namespace, wait)

    async def stream_depths(self) -> list[presence.StreamDepth]:
        """The command and event streams' sizes and their durable consumers' backlogs.

        Raises:
            BusError: JetStream did not answer, or refused.
        """
        return await presence.stream_depths(self.connection, [self.names.cmd_stream, self.names.evt_stream])

    async def publish_applied(self, ack: acks.RoutesApplied) -> None:
        """A proxy node's acknowledgement of the route revision it serves (core, fire and forget)."""
        await acks.publish_applied(self.connection, self.namespace, ack)

    async def follow_applied(self, callback: Callable[[acks.RoutesApplied], None]) -> Any:
        """Every proxy node's acknowledgements, to `callback`; returns the subscription."""
        return await acks.follow_applied(self.connection, self.namespace, callback)
