"""JupyterHub's spawn progress stream: which events a client gets, from the database and the bus.

A stream subscribes to the events of the server's current spawn *before* it reads that spawn's state,
so an outcome is either in what it reads or in its queue. While the spawn is pending it relays the
spawner's `server.progress` events and ends with exactly one ready or failed event; an outcome the
core subscription missed is found by polling `server_states`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.models import Pending, ServerView
from fleethub.services.api.queries import one_server_view
from fleethub.services.api.servers import label
from fleethub.services.api.waiters import Listener, Outcome, Result, Step, Waiters, outcome_of
from fleethub.shared.baseurl import public_path
from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.errors import BadRequest, NotFound
from fleethub.shared.events import ServerProgress
from fleethub.shared.lifecycle import ServerStatus
from fleethub.shared.names import server_prefix, storable

KEEPALIVE = 8.0  # seconds of silence before JupyterHub's keep-alive blank line
POLL = 2.0  # seconds between database checks for an outcome the subscription missed
REQUESTED: dict[str, Any] = {"progress": 0, "message": "Server requested"}
_REQUESTED_STEP = Step(0, "Server requested")

Event = dict[str, Any]


def ready_event(url: str) -> Event:
    """JupyterHub's terminal event of a spawn that succeeded."""
    return {"progress": 100, "ready": True, "message": f"Server ready at {url}",
            "html_message": f'Server ready at <a href="{url}">{url}</a>', "url": url}


def failed_event(outcome: Outcome, message: str) -> Event:
    """JupyterHub's terminal event of a spawn that failed, or was stopped first."""
    cancelled = outcome is Outcome.STOPPED
    text = "Spawn cancelled" if cancelled else f"Spawn failed: {message}" if message else "Spawn failed"
    return {"progress": 100, "failed": True, "message": text}


class ProgressStream:
    """The events one client gets; `events()` yields None when a keep-alive is due."""

    def __init__(self, waiters: Waiters, listener: Listener | None, url: str, first: Event,
                 replay: Sequence[Step] = ()) -> None:
        self._waiters = waiters
        self._listener = listener  # None: `first` is the terminal event
        self._url = url
        self._first = first
        # the steps this replica saw before the stream opened (a page opened mid-spawn sees them all); one that
        # arrived while the stream was opening is also in the listener's queue, and sent once
        self._replay = [step for step in replay if step != _REQUESTED_STEP]

    def close(self) -> None:
        """Stop listening (idempotent); the stream's owner calls it however the response ends."""
        if self._listener is not None:
            self._listener.close()

    def _terminal(self, result: Result) -> Event:
        return ready_event(self._url) if result.outcome is Outcome.READY else failed_event(*result)

    async def events(self) -> AsyncGenerator[Event | None, None]:
        try:
            yield self._first
            listener = self._listener
            if listener is None:
                return
            replayed = Counter(self._replay)
            for step in self._replay:
                yield {"progress": step.progress, "message": step.message}
            loop = asyncio.get_running_loop()
            last_sent = loop.time()
            next_poll = last_sent + POLL
            while True:
                message = await listener.get(min(last_sent + KEEPALIVE, next_poll) - loop.time())
                if message is not None:
                    outcome = outcome_of(message)
                    if outcome is not None:
                        yield self._terminal(outcome)
                        return
                    if isinstance(message, ServerProgress):
                        event = {"progress": message.progress, "message": message.message}
                        step = Step(message.progress, message.message)
                        if replayed[step] > 0:
                            replayed[step] -= 1
                        elif event != REQUESTED:  # the spawner's own first step, sent already
                            yield event
                            last_sent = loop.time()
                now = loop.time()
                if now >= next_poll:
                    recorded = await self._waiters.outcome(listener.spawn_id)
                    if recorded is not None:
                        yield self._terminal(recorded)
                        return
                    next_poll = loop.time() + POLL
                if now >= last_sent + KEEPALIVE:
                    yield None
                    last_sent = now
        finally:
            self.close()


def _settled(user: User, server_name: str, view: ServerView[Server, ServerState] | None, base_url: str) -> Event:
    """The one event of a spawn that is not pending.

    Raises:
        BadRequest: nothing is starting and no failure is recorded.
    """
    if view is not None:
        _, ready, pending = view.status
        if ready and pending is None:
            return ready_event(public_path(base_url, server_prefix(user.name, server_name)))
        st = view.current_state
        if st is not None and st.status == ServerStatus.FAILED:
            return failed_event(Outcome.FAILED, st.message)
        if st is not None and st.status == ServerStatus.STOPPED and st.started is None:
            return failed_event(Outcome.STOPPED, "")  # stopped before it was ever ready
    raise BadRequest(f"{label(user.name, server_name)} is not starting...")


async def open_progress(session: AsyncSession, waiters: Waiters, user: User, server_name: str, *,
                        base_url: str) -> ProgressStream:
    """The progress stream of a user's server (its URL under `base_url`); the caller must `close()` it if it
    never iterates it.

    Raises:
        NotFound: no such named server.
        BadRequest: not starting, and no failure recorded.
    """
    if not storable(server_name):  # a NUL from the path names no server
        raise NotFound(f"{user.name} has no server named {server_name!r}")
    for _ in range(3):  # a new spawn between the two reads: follow that one
        spawn_id = (await session.execute(
            select(Server.spawn_id).where(Server.user_id == user.id, Server.name == server_name)
        )).first()
        if spawn_id is None and server_name:
            raise NotFound(f"{user.name} has no server named '{server_name}'")
        if spawn_id is None or spawn_id[0] is None:
            raise BadRequest(f"{label(user.name, server_name)} is not starting...")
        listener = waiters.listen(spawn_id[0])
        keep = False
        try:
            view = await one_server_view(session, user, server_name)
            if view is None or view.server.spawn_id != listener.spawn_id:
                for row in (view.server, view.state) if view is not None else ():
                    if row is not None:
                        session.expunge(row)  # read afresh next time
                continue
            if view.status.pending == Pending.SPAWN:
                keep = True
                url = public_path(base_url, server_prefix(user.name, server_name))
                return ProgressStream(waiters, listener, url, REQUESTED,
                                      waiters.steps(listener.spawn_id))
            return ProgressStream(waiters, None, "", _settled(user, server_name, view, base_url))
        finally:
            if not keep:
                listener.close()
    raise BadRequest(f"{label(user.name, server_name)} is restarting too fast to follow; try again")
