"""The live auth and api replicas of the registry bucket, chosen round-robin for `/hub/` traffic."""

from __future__ import annotations

import time

from fleethub.services.proxy.table import Origin, parse_origin
from fleethub.shared.bus import REGISTRY_TTL
from fleethub.shared.events import RegistryEntry

# a replica refreshes its key every TTL/3; a little slack absorbs a slow refresh or clock drift
EXPIRY = REGISTRY_TTL + 1.0


class Replicas:
    """Replicas by registry key, with their own expiry.

    The bucket's TTL removes a dead replica's key, but that removal is not always delivered to a
    watch as a delete marker, so each entry also expires here when it is not refreshed in time.
    """

    __slots__ = ("_entries", "_lists", "_next")

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, Origin, float]] = {}  # key → (service, origin, expires at)
        self._lists: dict[str, list[Origin]] = {}
        self._next: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, service: str) -> bool:
        """Whether any live replica of `service` is known."""
        return bool(self._lists.get(service))

    def origins(self, service: str) -> list[Origin]:
        """The live replicas of `service`."""
        return list(self._lists.get(service, ()))

    def _rebuild(self) -> None:
        lists: dict[str, list[Origin]] = {}
        for service, origin, _ in self._entries.values():
            if origin not in lists.setdefault(service, []):
                lists[service].append(origin)
        self._lists = lists

    def put(self, key: str, entry: RegistryEntry, age: float = 0.0) -> None:
        """Record a (refreshed) replica; `age` is how long ago the value was written.

        Raises:
            ValueError: the entry's URL is not an http origin.
        """
        origin = parse_origin(entry.url)
        expires = time.monotonic() + EXPIRY - min(max(age, 0.0), EXPIRY)
        old = self._entries.get(key)
        self._entries[key] = (entry.service, origin, expires)
        if old is None or old[:2] != (entry.service, origin):
            self._rebuild()

    def delete(self, key: str) -> None:
        """Drop a replica whose key was deleted or purged."""
        if self._entries.pop(key, None) is not None:
            self._rebuild()

    def expire(self, now: float | None = None) -> None:
        """Drop replicas not refreshed in time."""
        now = time.monotonic() if now is None else now
        stale = [k for k, (_, _, expires) in self._entries.items() if expires < now]
        for key in stale:
            del self._entries[key]
        if stale:
            self._rebuild()

    def extend(self, now: float | None = None) -> None:
        """Keep every replica for a full expiry from `now`: while NATS is away nobody can refresh a key,
        and the last known replicas are better than none (the resync after reconnecting corrects them)."""
        until = (time.monotonic() if now is None else now) + EXPIRY
        for key, (service, origin, expires) in self._entries.items():
            if expires < until:
                self._entries[key] = (service, origin, until)

    def forget(self, origin: Origin) -> None:
        """Drop a replica that refused a connection until it refreshes its key again."""
        gone = [k for k, (_, o, _) in self._entries.items() if o == origin]
        for key in gone:
            del self._entries[key]
        if gone:
            self._rebuild()

    def choose(self, service: str, avoid: Origin | None = None) -> Origin | None:
        """The next replica of `service` (round robin), other than `avoid`; None if there is none."""
        options = self._lists.get(service)
        if not options:
            return None
        n = len(options)
        i = self._next.get(service, 0)
        for step in range(n):
            origin = options[(i + step) % n]
            if origin != avoid:
                self._next[service] = (i + step + 1) % n
                return origin
        return None
