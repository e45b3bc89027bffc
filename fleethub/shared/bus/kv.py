"""A KV bucket whose values are one pydantic model as JSON: the base of the route and registry stores.

Values are encoded and decoded here, once each; a value that does not decode is logged and treated as
absent. nats errors become `BusError` (`BusTimeout` for no answer in time, which stays a `TimeoutError`
as nats' own is, for callers that handle a timeout as an `OSError`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Generic, NoReturn, TypeAlias, TypeVar

from nats.js.errors import KeyNotFoundError, NoKeysError
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

    async def keys(self) -> list[str]:
        """Every key with a value (an empty list for an empty bucket).

        Raises:
            BusError: NATS failed.
        """
        with nats_errors(f"keys of {self.bucket}"):
            kv = await self._kv()
            try:
                return await kv.keys()
            except NoKeysError:
                return []

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
        with nats_errors(f"snapshot of {self.bucket}"):
            kv = await self._kv()
            try:
                keys = await kv.keys()
            except NoKeysError:
                return {}
            raw: dict[str, bytes] = {}
            for key in keys:
                try:
                    entry = await kv.get(key)
                except KeyNotFoundError:  # deleted since listed
                    continue
                if entry is not None and entry.value:
                    raw[key] = entry.value
        out: dict[str, M] = {}
        for key, value in raw.items():
            model = self._decode(key, value)
            if model is not None:
                out[key] = model
        return out

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
            watcher = await (await self._kv()).watch(">", inactive_threshold=WATCH_INACTIVE)
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
        raise BusError(f"watch of {self.bucket} ended")
