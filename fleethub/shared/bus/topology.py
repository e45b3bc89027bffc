"""What a namespace declares on JetStream (its streams and KV buckets, from one table), the idempotent
declaration, the KV handles, and which stream takes which subject and whether it takes atomic batches."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from fleethub.shared.bus.connection import Connection
from fleethub.shared.errors import BusError
from fleethub.shared.events import commands_filter, events_filter

log = logging.getLogger(__name__)

EVENTS_MAX_AGE = 7 * 24 * 3600.0
DUPLICATE_WINDOW = 120.0
REGISTRY_TTL = 6.0
BATCHES_RETRY = 60.0  # seconds before batches are tried again on a stream that refused them as such
WAIT_LOG_EVERY = 5.0  # seconds between the log lines of a service waiting for the streams it needs
EVERYTHING = frozenset({"cmd", "evt", "routes", "registry"})


@dataclass(frozen=True)
class Role:
    """What a connection declares and what it only waits for (its identity's grant, `permissions.TABLE`).

    Attributes:
        declares: the streams/buckets ("cmd", "evt", "routes", "registry") it creates when missing.
        updates: whether it also updates existing streams to the declared config (that can destroy
            data, so one service does it).
        needs: the others it uses, waited for until they exist.
    """

    declares: frozenset[str] = EVERYTHING
    updates: bool = True
    needs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Names:
    """Names of the streams, buckets and durable consumers of one namespace, and how many replicas the
    streams and buckets are declared with (more than 1 needs a JetStream cluster)."""

    namespace: str
    replicas: int = 1

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


def streams(names: Names) -> tuple[StreamConfig, ...]:
    """The streams of a namespace: commands (a work queue) and events (kept `EVENTS_MAX_AGE`)."""
    return (
        StreamConfig(
            name=names.cmd_stream,
            subjects=[commands_filter(names.namespace)],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            duplicate_window=DUPLICATE_WINDOW,
            allow_atomic=True,
            num_replicas=names.replicas,
        ),
        StreamConfig(
            name=names.evt_stream,
            subjects=[events_filter(names.namespace)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=EVENTS_MAX_AGE,
            duplicate_window=DUPLICATE_WINDOW,
            allow_atomic=True,
            num_replicas=names.replicas,
        ),
    )


def buckets(names: Names) -> tuple[KeyValueConfig, ...]:
    """The KV buckets of a namespace: the route table (on file) and the registry (in memory, with a TTL)."""
    return (
        KeyValueConfig(bucket=names.routes_bucket, history=1, storage=StorageType.FILE, replicas=names.replicas),
        KeyValueConfig(bucket=names.registry_bucket, history=1, ttl=REGISTRY_TTL, storage=StorageType.MEMORY,
                       replicas=names.replicas),
    )


class Topology:
    """The streams and buckets of one namespace over a connection, declared idempotently.

    It remembers which streams take atomic batches (nats-server 2.12 and later keep `allow_atomic`;
    older ones drop it from the config they store, and their streams are published to one message at a
    time), and caches KV handles.
    """

    def __init__(self, connection: Connection, names: Names, role: Role | None = None) -> None:
        self._conn = connection
        self.names = names
        self.role = role or Role()
        self._kv: dict[str, KeyValue] = {}
        self._atomic: set[str] = set()
        self._batches_retry: dict[str, float] = {}  # stream -> loop time to try batches again

    async def ensure(self, timeout: float | None = None) -> None:
        """Declare what this role declares (idempotent, any replica may run it) and wait for what it needs.

        Retries while JetStream is not answering yet (a server that just started, or a reconnect) or a
        stream or bucket it needs does not exist yet (the api declares them), logging every few seconds.

        Args:
            timeout: give up after this many seconds; None: 15 s for the role that updates streams, no
                limit for the others (they wait for it).

        Raises:
            BusError: still not done after `timeout`.
        """
        if timeout is None and self.role.updates:
            timeout = 15.0
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        next_log = loop.time() + WAIT_LOG_EVERY
        while True:
            try:
                await self._declare()
                return
            except Exception as exc:
                if deadline is not None and loop.time() > deadline:
                    raise BusError(f"cannot declare JetStream streams and buckets: {exc}") from None
                if loop.time() > next_log:
                    next_log = loop.time() + WAIT_LOG_EVERY
                    log.warning("waiting for the JetStream streams and buckets (the api declares them): %s", exc)
                await asyncio.sleep(0.2)

    async def _declare(self) -> None:
        role = self.role
        for kind, stream in zip(("cmd", "evt"), streams(self.names), strict=True):
            if kind in role.declares:
                await self._ensure_stream(stream, update=role.updates)
            elif kind in role.needs:
                await self._stream_exists(stream.name)  # type: ignore[arg-type]
        for kind, bucket in zip(("routes", "registry"), buckets(self.names), strict=True):
            if kind in role.declares:
                await self.kv(bucket.bucket, create=bucket)
            elif kind in role.needs:
                await self.kv(bucket.bucket, check=True)

    async def _stream_exists(self, name: str) -> None:
        try:
            info = await self._conn.js.stream_info(name)
        except NotFoundError:
            raise BusError(f"stream {name} does not exist yet") from None
        self._note_atomic(name, bool(info.config.allow_atomic))

    async def _ensure_stream(self, config: StreamConfig, *, update: bool = True) -> None:
        js = self._conn.js
        name: str = config.name  # type: ignore[assignment]
        info = None
        try:
            info = await js.stream_info(name)
            if update:
                info = None
        except NotFoundError:
            try:
                info = await js.add_stream(config)
            except BadRequestError:
                pass  # created concurrently by another replica
            if info is None and not update:
                info = await js.stream_info(name)
        if info is None:
            info = await js.update_stream(config)
        self._note_atomic(name, bool(info.config.allow_atomic))

    def _note_atomic(self, name: str, atomic: bool) -> None:
        self._batches_retry.pop(name, None)
        if atomic:
            self._atomic.add(name)
        else:
            self._atomic.discard(name)

    async def kv(self, bucket: str, create: KeyValueConfig | None = None, *, check: bool = False) -> KeyValue:
        """A KV bucket handle, creating the bucket from `create` if it does not exist.

        With `create` or `check`, the bucket's existence is checked even when a handle is cached: an
        in-memory bucket (the registry) is gone after a NATS restart, and `ensure` must bring it back
        (or wait until it is back).

        Raises:
            BusError: the bucket does not exist (and no `create`).
        """
        if bucket in self._kv and create is None and not check:
            return self._kv[bucket]
        js = self._conn.js
        try:
            handle = await js.key_value(bucket)
        except (NotFoundError, BadRequestError):
            if create is None:
                raise BusError(f"KV bucket {bucket} does not exist") from None
            handle = await js.create_key_value(config=create)
        self._kv[bucket] = handle
        return handle

    def forget(self) -> None:
        """Drop the cached KV handles (the connection they belong to is closed)."""
        self._kv.clear()

    def stream_of(self, subject: str) -> str | None:
        """The stream a subject of this namespace is stored in (None: no stream of ours takes it)."""
        prefix, _, rest = subject.partition(".")
        kind = rest.split(".", 1)[0] if prefix == self.names.namespace else ""
        return self.names.cmd_stream if kind == "cmd" else self.names.evt_stream if kind == "evt" else None

    def takes_batches(self, stream: str | None) -> bool:
        """Whether `stream` takes atomic batches (known once `ensure` ran; a stream found not to take them
        while running is tried again `BATCHES_RETRY` seconds later)."""
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

    def batches_off(self, stream: str, answer: str) -> None:
        """`stream` turned out not to take batches: publish to it one at a time, and try again later (the
        stream's config may be changed back, or the server upgraded)."""
        if stream in self._atomic:
            log.warning("stream %s does not take atomic batches (answer: %.200s); publishing one message at "
                        "a time, and trying batches again in %.0f s", stream, answer, BATCHES_RETRY)
        self._atomic.discard(stream)
        self._batches_retry[stream] = asyncio.get_running_loop().time() + BATCHES_RETRY
