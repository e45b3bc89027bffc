"""A KV bucket whose values are one pydantic model as JSON: the base of the route and registry stores.

Values are encoded and decoded here, once each; a value that does not decode is logged and treated as
absent. nats errors become `BusError` (`BusTimeout` for no answer in time, which stays a `TimeoutError`
as nats' own is, for callers that handle a timeout as an `OSError`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NoReturn, TypeAlias, TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from fleethub.shared.bus.topology import Topology
from fleethub.shared.errors import BusError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

Apply: TypeAlias = Callable[[str, M | None, float], None]
"""A watch's callback: key, value (None: deleted, purged or undecodable) and when it was written (epoch
seconds, 0 when unknown)."""

DELETES = ("DEL", "PURGE")
# a stopped watch's ephemeral consumer lingers on the server for this long (nats-py's default: 5 min)
WATCH_INACTIVE = 15.0


class BusTimeout(BusError, TimeoutError):
    """NATS did not answer in time."""


@dataclass(frozen=True)
class Version(Generic[M]):
    """One key's latest entry, as a listing saw it.

    Attributes:
        value: the value (None: deleted, purged, or undecodable).
        revision: the entry's revision; a conditional write (`put_if`, `delete_if`) names it.
        written: when the entry was written (epoch seconds, 0 when unknown).
        deleted: whether the entry is a delete or purge marker.
    """

    value: M | None
    revision: int
    written: float
    deleted: bool


@contextlib.contextmanager
def nats_errors(what: str) -> Iterator[None]:
    """Turn a nats exception raised inside into `BusError` (`BusTimeout` for a timeout) about `what`."""
    try:
        yield
    except BusError:
        raise
    except TimeoutError as exc:  # nats' TimeoutError is one too
        raise BusTimeout(f"{what}: {exc or 'no answer in time'}") from exc
    except Exception as exc:
        raise BusError(f"{what}: {exc}") from exc


def _written(created: object) -> float:
    """When a KV value was written, in epoch seconds (0 when unknown)."""
    return created.timestamp() if isinstance(created, datetime) else 0.0


class ModelBucket(Generic[M]):
    """The KV bucket `bucket` of `topology`, holding `model` values.

    Args:
        topology: the namespace's topology (it declares the bucket and caches its handle).
        bucket: the bucket's name.
        model: the type of its values.
        what: what a value is called in logs ("route").
    """

    def __init__(self, topology: Topology, bucket: str, model: type[M], what: str) -> None:
        self._topology = topology
        self.bucket = bucket
        self._model = model
        self._what = what

    async def _kv(self) -> KeyValue:
        return await self._topology.kv(self.bucket)

    def _decode(self, key: str, raw: bytes | None) -> M | None:
        if raw is None:
            return None
        try:
            return self._model.model_validate_json(raw)
        except ValueError as exc:
            log.warning("ignoring %s %s: %s", self._what, key[:200], str(exc)[:300])
            return None

    async def _put(self, key: str, value: M) -> int:
        with nats_errors(f"put {key} in {self.bucket}"):
            return int(await (await self._kv()).put(key, value.model_dump_json().encode()))

    async def _delete(self, key: str) -> None:
        with nats_errors(f"delete {key} from {self.bucket}"):
            await (await self._kv()).delete(key)

    @contextlib.asynccontextmanager
    async def _listing(self, **watch: Any) -> AsyncIterator[AsyncIterator[Any]]:
        """The bucket's latest entry per key, up to the end of the initial replay, from one watch whose
        consumer is deleted afterwards: nats-py's own listings leave theirs on the server for minutes (a
        listing every few seconds kept hundreds of them on the route stream)."""
        kv = await self._kv()
        watcher = await kv.watch(">", inactive_threshold=WATCH_INACTIVE, **watch)

        async def entries() -> AsyncIterator[Any]:
            async for entry in watcher:
                if entry is None:  # the initial replay is done
                    return
                yield entry

        try:
            yield entries()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
            await _delete_consumer(kv, watcher)

    async def keys(self) -> list[str]:
        """Every key with a value (an empty list for an empty bucket).

        Raises:
            BusError: NATS failed.
        """
        with nats_errors(f"keys of {self.bucket}"):
            async with self._listing(ignore_deletes=True, meta_only=True) as entries:
                return [entry.key async for entry in entries]

    async def versions(self) -> dict[str, Version[M]]:
        """Every key's latest entry, delete markers included, with its revision and when it was written.

        Raises:
            BusError: NATS failed.
        """
        out: dict[str, Version[M]] = {}
        with nats_errors(f"versions of {self.bucket}"):
            async with self._listing() as entries:
                async for entry in entries:
                    deleted = entry.operation in DELETES
                    value = None if deleted else self._decode(entry.key, entry.value)
                    out[entry.key] = Version(value, entry.revision, _written(entry.created), deleted)
        return out

    async def put_if(self, key: str, value: M, revision: int) -> bool:
        """Put `value` under `key` only if the key's latest revision is still `revision` (0: the key never
        had an entry); False if it changed meanwhile.

        Raises:
            BusError: NATS failed.
        """
        with nats_errors(f"put {key} in {self.bucket}"):
            try:
                await (await self._kv()).update(key, value.model_dump_json().encode(), last=revision)
            except KeyWrongLastSequenceError:
                return False
        return True

    async def delete_if(self, key: str, revision: int) -> bool:
        """Delete `key` only if its latest revision is still `revision`; False if it changed meanwhile.

        Raises:
            BusError: NATS failed.
        """
        with nats_errors(f"delete {key} from {self.bucket}"):
            try:
                await (await self._kv()).delete(key, last=revision)
            except KeyWrongLastSequenceError:
                return False
            except Exception as exc:  # nats-py raises a plain APIError for a delete's wrong last sequence
                if getattr(exc, "err_code", None) in (10071, 10164):
                    return False
                raise
        return True

    async def get(self, key: str) -> M | None:
        """The value of `key`; None when it is absent, deleted or does not decode (logged).

        Raises:
            BusError: NATS failed.
        """
        with nats_errors(f"get {key} from {self.bucket}"):
            kv = await self._kv()
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:  # never written, or deleted
                return None
        return self._decode(key, entry.value) if entry is not None and entry.value else None

    async def snapshot(self) -> dict[str, M]:
        """Every key with its current value (deleted keys and undecodable values left out).

        Raises:
            BusError: NATS failed.
        """
        return {key: v.value for key, v in (await self.versions()).items() if v.value is not None}

    async def follow(self, apply: Apply[M], loaded: Callable[[], None],
                     revision: Callable[[int], None] | None = None) -> NoReturn:
        """Give `apply` every current value, then call `loaded`, then give it every change; until cancelled.

        `revision`, if given, is told the bucket revision (stream sequence) of each entry once `apply` has
        taken it: the watch delivers in revision order, so everything up to it has been applied.

        An undecodable value is logged and applied as None (it must not leave the previous value in
        place). Exceptions of `apply` and `loaded` end the watch and are raised as they are.

        Raises:
            BusError: the watch could not start, failed, or ended by itself (the caller starts over).
        """
        with nats_errors(f"watch of {self.bucket}"):
            kv = await self._kv()
            watcher = await kv.watch(">", inactive_threshold=WATCH_INACTIVE)
        decode = self._decode
        try:
            # the hot path of a proxy node's start (the whole table) and of every route change
            async for entry in watcher:
                if entry is None:
                    loaded()
                elif entry.operation in DELETES:
                    apply(entry.key, None, 0.0)
                else:
                    apply(entry.key, decode(entry.key, entry.value), _written(entry.created))
                if entry is not None and revision is not None:
                    revision(entry.revision or 0)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
            await _delete_consumer(kv, watcher)
        raise BusError(f"watch of {self.bucket} ended")


async def _delete_consumer(kv: KeyValue, watcher: Any) -> None:
    """Delete a stopped watch's consumer now (else it stays `WATCH_INACTIVE` seconds); best effort."""
    # nats-py keeps the (re-created) ordered consumer's name on the subscription; there is no public handle
    name = getattr(getattr(watcher, "_sub", None), "_consumer", None)
    if not name:
        return
    with contextlib.suppress(Exception):
        await kv._js.delete_consumer(kv._stream, name)
