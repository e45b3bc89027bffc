"""Every server event of a namespace, read from the events stream from its first message on.

Usage::

    log = await EventLog.open(nats_url, namespace)   # once the api declared the streams
    ...
    log.count("server.ready", spawn_id=sid)           # how many times that spawn was announced ready
    await log.wait("server.failed", user="alice")     # the first such event (already seen or to come)
    await log.close()

An ordered consumer (ephemeral, flow-controlled, re-created by nats-py after a gap or a reconnect) of
`<ns>.evt.server.>` delivers the stream from the start, so events published before the log was opened
count too. Duplicates the stream deduplicated are not seen; a re-sent event with a new id would be.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fleethub.shared.bus import Bus
from fleethub.shared.events import Envelope, server_events_filter


class EventLog:
    """The server events of one namespace, in stream order (`events`), filled in the background."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._sub: Any = None
        self.events: list[Envelope] = []
        self._changed = asyncio.Event()

    @classmethod
    async def open(cls, nats_url: str, namespace: str) -> EventLog:
        """Connect (anonymously) and subscribe from the stream's first message."""
        bus = Bus(nats_url, namespace, "faults-eventlog")
        await bus.connect()
        log = cls(bus)
        log._sub = await bus.js.subscribe(server_events_filter(namespace), cb=log._on,
                                          stream=bus.names.evt_stream, ordered_consumer=True)
        return log

    async def _on(self, msg: Any) -> None:
        try:
            self.events.append(Envelope.model_validate_json(msg.data))
        except ValueError:  # a malformed event (a test may publish one): not a server event we can count
            return
        self._changed.set()

    def of(self, type: str | None = None, *, spawn_id: str | None = None, user: str | None = None,
           server_name: str | None = None) -> list[Envelope]:
        """The events seen so far of `type` (e.g. "server.ready"), for that spawn / user / server name."""
        return [e for e in self.events
                if (type is None or e.type == type)
                and (spawn_id is None or e.data.get("spawn_id") == spawn_id)
                and (user is None or e.data.get("user") == user)
                and (server_name is None or e.data.get("server_name", "") == server_name)]

    def count(self, type: str, *, spawn_id: str | None = None, user: str | None = None) -> int:
        """How many events of `type` were seen for that spawn (or user)."""
        return len(self.of(type, spawn_id=spawn_id, user=user))

    def ready_counts(self) -> dict[str, int]:
        """`server.ready` events per spawn id (exactly once: every value should be 1)."""
        counts: dict[str, int] = {}
        for e in self.of("server.ready"):
            counts[e.data["spawn_id"]] = counts.get(e.data["spawn_id"], 0) + 1
        return counts

    def spawn_ids(self, user: str, server_name: str = "") -> list[str]:
        """The spawn ids that events name for this server, in order of first appearance."""
        seen: dict[str, None] = {}
        for e in self.of(user=user, server_name=server_name):
            seen.setdefault(e.data["spawn_id"])
        return list(seen)

    async def wait(self, type: str, *, spawn_id: str | None = None, user: str | None = None,
                   server_name: str | None = None, timeout: float = 10.0) -> Envelope:
        """The first event of `type` matching the filters, waiting up to `timeout` seconds for it.

        Raises:
            AssertionError: none came in time (the message lists the events seen for that user).
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(type, spawn_id=spawn_id, user=user, server_name=server_name)
            if found:
                return found[0]
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [(e.type, e.data.get("spawn_id"), e.data.get("message") or e.data.get("reason"))
                        for e in self.of(user=user)]
                raise AssertionError(f"no {type} event (spawn {spawn_id}, user {user}) within {timeout}s; "
                                     f"seen: {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        """Unsubscribe and disconnect."""
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may already be gone
                pass
        await self._bus.close()
