"""Spawning, stopping, adopting and watching servers: the spawner's logic, one worker's view.

Every transition is committed to `server_states` together with its event (outbox) before the
command is acknowledged (`fleethub.shared.lifecycle.transition`); routes are put before a server is
announced ready and deleted before it is announced stopped. A command's handling returns its ack decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fleethub.services.spawner import leases
from fleethub.services.spawner.backends import Backend, ServerSpec
from fleethub.services.spawner.env import server_env
from fleethub.services.spawner.httpcheck import http_status
from fleethub.services.spawner.routes import delete_route, put_route
from fleethub.shared.bus import Decision
from fleethub.shared.events import ServerProgress, SpawnServer, StopServer
from fleethub.shared.lifecycle import DONE, ServerKey, ServerStatus, Transition, transition
from fleethub.shared.names import encode_token, server_prefix
from fleethub.shared.routes import reconcile_round, route_for
from fleethub.shared.service import Runtime

log = logging.getLogger(__name__)

Heartbeat = Callable[[], Awaitable[None]]

RETRY_DELAY = 0.5  # seconds before a command another worker (or my own in-flight task) is on comes back


class SpawnFailed(Exception):
    """The server could not be started; the message says why."""


class Worker:
    """One spawner worker process: its lease holder id, backend and in-flight spawns."""

    def __init__(self, runtime: Runtime, backend: Backend) -> None:
        self.rt = runtime
        self.backend = backend
        self.me = runtime.replica
        self.ttl = runtime.settings.spawner.lease_ttl
        self.announcer = runtime.announcer
        self.inflight: dict[ServerKey, asyncio.Task[Any]] = {}
        self.cancelled_by_stop: set[ServerKey] = set()
        self._progress_sends: set[asyncio.Task[None]] = set()

    async def _record(self, change: Transition) -> leases.Row | None:
        """Make `change` in a transaction of its own; the row as it now is, or None if it was refused."""
        async with self.rt.sessions() as session, session.begin():
            row = await transition(session, change, self.announcer)
            return leases.row_of(row) if row is not None else None

    # --- spawn -----------------------------------------------------------------------------------

    async def spawn(self, cmd: SpawnServer, heartbeat: Heartbeat) -> Decision:
        """Handle a spawn command."""
        key = ServerKey(cmd.user, cmd.server_name)
        async with self.rt.sessions() as session, session.begin():
            if not await leases.is_desired(session, key, cmd.spawn_id):
                log.warning("spawn %s for %s refused: no longer the requested spawn", cmd.spawn_id, key)
                return Decision.ack()
            claim = Transition.claim(key, cmd.spawn_id, worker=self.me, lease_ttl=self.ttl)
            claimed = await transition(session, claim, self.announcer) is not None
            row = None if claimed else await leases.get(session, key)
            if (row is not None and row.spawn_id == cmd.spawn_id and row.status == ServerStatus.PENDING
                    and not row.lease_live):
                # the worker that started this spawn died: take it over and start again
                row = await leases.take_over(session, key, cmd.spawn_id, me=self.me, ttl=self.ttl,
                                             statuses=(ServerStatus.PENDING,))
                if row is not None:
                    claimed = True
                    if row.state:
                        await self.backend.stop(row.state)
        if not claimed:
            assert row is not None
            if row.spawn_id != cmd.spawn_id:
                log.warning("spawn %s for %s refused: spawn %s is %s", cmd.spawn_id, key, row.spawn_id, row.status)
                return Decision.ack()
            if row.status in (ServerStatus.PENDING, ServerStatus.STOPPING):
                return Decision.nak(RETRY_DELAY)  # another worker (or my own in-flight task) is on it
            return Decision.ack()  # already running, stopped or failed: nothing to do
        task = asyncio.current_task()
        assert task is not None
        self.inflight[key] = task
        try:
            await self._start(cmd, heartbeat)
        except asyncio.CancelledError:
            if key not in self.cancelled_by_stop:
                raise  # shutting down: the command is redelivered, the lease expires, another worker decides
            # a stop took this spawn over and records its outcome: the spawn command is done
            self.cancelled_by_stop.discard(key)
            task.uncancel()
        finally:
            self.inflight.pop(key, None)
        return Decision.ack()

    async def _start(self, cmd: SpawnServer, heartbeat: Heartbeat) -> None:
        s = self.rt.settings.spawner
        key = ServerKey(cmd.user, cmd.server_name)
        prefix = server_prefix(cmd.user, cmd.server_name)
        await self._progress(cmd, 0, "Server requested")
        spec = ServerSpec(
            user=cmd.user, server_name=cmd.server_name, spawn_id=cmd.spawn_id, prefix=prefix,
            env=server_env(self.rt.settings, self.rt.secret_key, cmd.user, cmd.server_name, cmd.spawn_id),
            user_options=dict(cmd.user_options),
            log_path=self.rt.settings.data_dir / "logs"
            / f"{encode_token(cmd.user)}.{encode_token(cmd.server_name)}.log",
        )
        state: dict[str, Any] = {}
        try:
            try:
                state = await asyncio.wait_for(self.backend.start(spec), s.start_timeout)
            except TimeoutError:
                raise SpawnFailed(f"server did not start within {s.start_timeout:.0f}s") from None
            async with self.rt.sessions() as session, session.begin():
                await leases.save_state(session, key, cmd.spawn_id, me=self.me, state=state)
            await self._progress(cmd, 50, "Spawning server...")
            target = self.backend.target(state)
            await self._wait_ready(f"{target}{prefix}api", state, heartbeat)
            await put_route(self.rt.bus, route_for(cmd.user, cmd.server_name, target, cmd.spawn_id))
            ready = Transition.ready(key, cmd.spawn_id, worker=self.me, url=prefix, target=target, state=state)
            if await self._record(ready) is None:  # lost the lease meanwhile (should not happen): leave it to its owner
                log.warning("lost the lease of %s during start", key)
            log.info("%s ready at %s", key, target)
        except asyncio.CancelledError:
            # a stop for this spawn: end what was started; the stop records the outcome
            if state:
                await asyncio.shield(self.backend.stop(state))
            raise
        except (SpawnFailed, OSError) as exc:
            log.warning("spawn of %s failed: %s", key, exc)
            if state:
                await self.backend.stop(state)
            await delete_route(self.rt.bus, cmd.user, cmd.server_name)
            await self._record(Transition.failed(key, cmd.spawn_id, worker=self.me, message=str(exc)))

    async def _wait_ready(self, url: str, state: dict[str, Any], heartbeat: Heartbeat) -> None:
        s = self.rt.settings.spawner
        deadline = time.monotonic() + s.http_timeout
        last_beat = time.monotonic()
        while True:
            status = await http_status(url, timeout=min(2.0, s.http_timeout))
            if status is not None and status < 500:
                return
            if not await self.backend.poll(state):
                raise SpawnFailed("server process exited before answering HTTP")
            if time.monotonic() > deadline:
                raise SpawnFailed(f"server did not answer HTTP within {s.http_timeout:.0f}s")
            if time.monotonic() - last_beat > 5:
                await heartbeat()
                last_beat = time.monotonic()
            await asyncio.sleep(s.poll_interval)

    async def _progress(self, cmd: SpawnServer, pct: int, message: str) -> None:
        """Publish a progress event in the background: informative, it never waits on the spawn's path (its
        acknowledgement was a bus round trip per step of every spawn)."""
        event = ServerProgress(user=cmd.user, server_name=cmd.server_name, spawn_id=cmd.spawn_id,
                               progress=pct, message=message)
        task = asyncio.get_running_loop().create_task(self._send_progress(event))
        self._progress_sends.add(task)
        task.add_done_callback(self._progress_sends.discard)

    async def _send_progress(self, event: ServerProgress) -> None:
        try:
            await self.rt.bus.publish(event)
        except Exception as exc:  # progress is informative; never fail a spawn for it
            log.debug("progress event not published: %s", exc)

    # --- stop ------------------------------------------------------------------------------------

    async def stop(self, cmd: StopServer) -> Decision:
        """Handle a stop command."""
        key = ServerKey(cmd.user, cmd.server_name)
        async with self.rt.sessions() as session, session.begin():
            row = await leases.get(session, key)
            if row is None or row.status in DONE:
                if cmd.spawn_id is not None and (row is None or row.spawn_id != cmd.spawn_id):
                    await transition(session, Transition.tombstone(key, cmd.spawn_id), self.announcer)
                return Decision.ack()
        if cmd.spawn_id is not None and row.spawn_id != cmd.spawn_id:
            return Decision.ack()  # a stop for an older spawn
        mine = self.inflight.get(key)
        if mine is not None:
            self.cancelled_by_stop.add(key)
            mine.cancel()
            await asyncio.gather(mine, return_exceptions=True)
        elif (row.status in (ServerStatus.PENDING, ServerStatus.STOPPING) and row.lease_live
              and row.worker_id != self.me):
            return Decision.nak(RETRY_DELAY)  # another worker is starting or stopping it: follow, never race
        claimed = await self._record(Transition.stopping(key, row.spawn_id, worker=self.me, lease_ttl=self.ttl))
        if claimed is None:
            return Decision.nak(RETRY_DELAY)
        await self._finish_stop(claimed, cmd.reason)
        return Decision.ack()

    async def _finish_stop(self, row: leases.Row, reason: str) -> None:
        await delete_route(self.rt.bus, row.user, row.server_name)
        if row.state:
            await self.backend.stop(row.state)
        await self._record(Transition.stopped(row.key, row.spawn_id, worker=self.me, reason=reason))
        log.info("%s stopped (%s)", row.key, reason)

    # --- background loops ------------------------------------------------------------------------

    async def renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                async with self.rt.sessions() as session, session.begin():
                    await leases.renew(session, self.me, self.ttl)
            except Exception as exc:
                log.warning("lease renewal failed: %s", exc)

    async def adopt_loop(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.rt.sessions() as session, session.begin():
                    rows = await leases.adopt_expired(session, self.me, self.ttl)
                for row in rows:
                    await self._adopt(row)
            except Exception as exc:
                log.warning("adoption pass failed: %s", exc)

    async def _alive(self, row: leases.Row) -> bool:
        if not row.state or not await self.backend.poll(row.state):
            return False
        status = await http_status(f"{self.backend.target(row.state)}{server_prefix(row.user, row.server_name)}api")
        return status is not None and status < 500

    async def _adopt(self, row: leases.Row) -> None:
        log.info("adopting %s (%s) from a dead worker", row.key, row.status)
        if row.status == ServerStatus.STOPPING:
            await self._finish_stop(row, "api")
            return
        if await self._alive(row):
            target = self.backend.target(row.state)
            await put_route(self.rt.bus, route_for(row.user, row.server_name, target, row.spawn_id))
            if row.status == ServerStatus.PENDING:
                await self._record(Transition.ready(row.key, row.spawn_id, worker=self.me, target=target,
                                                    url=server_prefix(row.user, row.server_name), state=row.state))
            return
        if row.state:
            await self.backend.stop(row.state)
        await delete_route(self.rt.bus, row.user, row.server_name)
        if row.status == ServerStatus.PENDING:
            await self._record(Transition.failed(row.key, row.spawn_id, worker=self.me,
                                                 message="spawner worker died during start"))
        else:
            await self._record(Transition.stopped(row.key, row.spawn_id, worker=self.me, reason="exited"))

    async def poll_loop(self, interval: float = 2.0) -> None:
        """Notice servers of mine whose process exited."""
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.rt.sessions() as session:
                    rows = await leases.owned_running(session, self.me)
                for row in rows:
                    if row.state and await self.backend.poll(row.state):
                        continue
                    await delete_route(self.rt.bus, row.user, row.server_name)
                    await self._record(Transition.stopped(row.key, row.spawn_id, worker=self.me, reason="exited",
                                                          expected=frozenset({ServerStatus.RUNNING})))
                    log.info("%s exited", row.key)
            except Exception as exc:
                log.warning("poll pass failed: %s", exc)

    async def reconcile_loop(self, interval: float = 5.0) -> None:
        """Repair the route table from PostgreSQL and the configured services; one worker at a time.

        The first round runs at once, so the services' routes exist as soon as a worker is up.
        """
        first = True
        while True:
            if not first:
                await asyncio.sleep(interval)
            first = False
            try:
                await reconcile_round(self.rt.engine, self.rt.sessions, self.rt.bus, self.rt.settings.services)
            except Exception as exc:
                log.warning("route reconciliation failed: %s", exc)
