"""Spawning, stopping, adopting and watching servers: the spawner's logic, one worker's view.

Every transition is committed to `server_states` together with its event (outbox) before the
command is acknowledged; routes are put before a server is announced ready and deleted before it is
announced stopped.
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
from fleethub.services.spawner.routes import delete_route, put_route, reconcile_round, route_for
from fleethub.shared.events import ServerFailed, ServerProgress, ServerReady, ServerStopped, SpawnServer, StopServer
from fleethub.shared.names import encode_token, server_prefix
from fleethub.shared.outbox import enqueue
from fleethub.shared.service import Runtime

log = logging.getLogger(__name__)

Heartbeat = Callable[[], Awaitable[None]]


class SpawnFailed(Exception):
    """The server could not be started; the message says why."""


class Worker:
    """One spawner worker process: its lease holder id, backend and in-flight spawns."""

    def __init__(self, runtime: Runtime, backend: Backend) -> None:
        self.rt = runtime
        self.backend = backend
        self.me = runtime.replica
        self.ttl = runtime.settings.spawner.lease_ttl
        self.ns = runtime.settings.nats_namespace
        self.inflight: dict[tuple[str, str], asyncio.Task[str]] = {}
        self.cancelled_by_stop: set[tuple[str, str]] = set()

    # --- spawn -----------------------------------------------------------------------------------

    async def spawn(self, cmd: SpawnServer, heartbeat: Heartbeat) -> str:
        """Handle a spawn command; returns "ack" or "retry"."""
        key = (cmd.user, cmd.server_name)
        async with self.rt.sessions() as session, session.begin():
            if not await leases.is_desired(session, cmd.user, cmd.server_name, cmd.spawn_id):
                log.warning("spawn %s for %s/%s refused: no longer the requested spawn", cmd.spawn_id, *key)
                return "ack"
            claimed = await leases.claim_for_spawn(session, cmd.user, cmd.server_name, cmd.spawn_id, self.me, self.ttl)
            row = None if claimed else await leases.get(session, cmd.user, cmd.server_name)
            if row is not None and row.spawn_id == cmd.spawn_id and row.status == "pending" and not row.lease_live:
                # the worker that started this spawn died: take it over and start again
                row = await leases.take_over(session, cmd.user, cmd.server_name, cmd.spawn_id, self.me, self.ttl,
                                             ("pending",))
                if row is not None:
                    claimed = True
                    if row.state:
                        await self.backend.stop(row.state)
        if not claimed:
            assert row is not None
            if row.spawn_id != cmd.spawn_id:
                log.warning("spawn %s for %s/%s refused: spawn %s is %s", cmd.spawn_id, *key, row.spawn_id, row.status)
                return "ack"
            if row.status in ("pending", "stopping"):
                return "retry"  # another worker (or my own in-flight task) is on it
            return "ack"  # already running, stopped or failed: nothing to do
        task = asyncio.current_task()
        assert task is not None
        self.inflight[key] = task  # type: ignore[assignment]
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
        return "ack"

    async def _start(self, cmd: SpawnServer, heartbeat: Heartbeat) -> None:
        s = self.rt.settings.spawner
        prefix = server_prefix(cmd.user, cmd.server_name)
        await self._progress(cmd, 0, "Server requested")
        spec = ServerSpec(
            user=cmd.user, server_name=cmd.server_name, spawn_id=cmd.spawn_id, prefix=prefix,
            env=server_env(self.rt.settings, self.rt.secret_key, cmd.user, cmd.server_name, cmd.spawn_id),
            user_options=dict(cmd.user_options),
            log_path=self.rt.settings.data_dir / "logs" / f"{encode_token(cmd.user)}.{encode_token(cmd.server_name)}.log",
        )
        state: dict[str, Any] = {}
        try:
            try:
                state = await asyncio.wait_for(self.backend.start(spec), s.start_timeout)
            except TimeoutError:
                raise SpawnFailed(f"server did not start within {s.start_timeout:.0f}s") from None
            async with self.rt.sessions() as session, session.begin():
                await leases.save_state(session, cmd.user, cmd.server_name, cmd.spawn_id, self.me, state)
            await self._progress(cmd, 50, "Spawning server...")
            target = self.backend.target(state)
            await self._wait_ready(f"{target}{prefix}api", state, heartbeat)
            await put_route(self.rt.bus, route_for(cmd.user, cmd.server_name, target, cmd.spawn_id))
            async with self.rt.sessions() as session, session.begin():
                ok = await leases.mark_running(session, cmd.user, cmd.server_name, cmd.spawn_id, self.me, prefix,
                                               target, state)
                if ok:
                    enqueue(session, ServerReady(user=cmd.user, server_name=cmd.server_name, spawn_id=cmd.spawn_id,
                                                 url=prefix, target=target), self.ns)
            if not ok:  # lost the lease meanwhile (should not happen): leave the server to its new owner
                log.warning("lost the lease of %s/%s during start", cmd.user, cmd.server_name)
            self.rt.relay.kick()
            log.info("%s/%s ready at %s", cmd.user, cmd.server_name, target)
        except asyncio.CancelledError:
            # a stop for this spawn: end what was started; the stop records the outcome
            if state:
                await asyncio.shield(self.backend.stop(state))
            raise
        except (SpawnFailed, OSError) as exc:
            log.warning("spawn of %s/%s failed: %s", cmd.user, cmd.server_name, exc)
            if state:
                await self.backend.stop(state)
            await delete_route(self.rt.bus, cmd.user, cmd.server_name)
            async with self.rt.sessions() as session, session.begin():
                if await leases.mark_done(session, cmd.user, cmd.server_name, cmd.spawn_id, self.me, "failed", str(exc)):
                    enqueue(session, ServerFailed(user=cmd.user, server_name=cmd.server_name, spawn_id=cmd.spawn_id,
                                                  message=str(exc)), self.ns)
            self.rt.relay.kick()

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
        try:
            await self.rt.bus.publish(ServerProgress(user=cmd.user, server_name=cmd.server_name, spawn_id=cmd.spawn_id,
                                                     progress=pct, message=message))
        except Exception as exc:  # progress is informative; never fail a spawn for it
            log.debug("progress event not published: %s", exc)

    # --- stop ------------------------------------------------------------------------------------

    async def stop(self, cmd: StopServer) -> str:
        """Handle a stop command; returns "ack" or "retry"."""
        key = (cmd.user, cmd.server_name)
        async with self.rt.sessions() as session, session.begin():
            row = await leases.get(session, cmd.user, cmd.server_name)
            if row is None or row.status in leases.DONE:
                if cmd.spawn_id is not None and (row is None or row.spawn_id != cmd.spawn_id):
                    await leases.tombstone(session, cmd.user, cmd.server_name, cmd.spawn_id)
                return "ack"
        if cmd.spawn_id is not None and row.spawn_id != cmd.spawn_id:
            return "ack"  # a stop for an older spawn
        mine = self.inflight.get(key)
        if mine is not None:
            self.cancelled_by_stop.add(key)
            mine.cancel()
            await asyncio.gather(mine, return_exceptions=True)
        elif row.status in ("pending", "stopping") and row.lease_live and row.worker_id != self.me:
            return "retry"  # another worker is starting or stopping it: follow, never race
        async with self.rt.sessions() as session, session.begin():
            claimed = await leases.begin_stop(session, cmd.user, cmd.server_name, row.spawn_id, self.me, self.ttl)
        if claimed is None:
            return "retry"
        await self._finish_stop(claimed, cmd.reason)
        return "ack"

    async def _finish_stop(self, row: leases.Row, reason: str) -> None:
        await delete_route(self.rt.bus, row.user, row.server_name)
        if row.state:
            await self.backend.stop(row.state)
        async with self.rt.sessions() as session, session.begin():
            if await leases.mark_done(session, row.user, row.server_name, row.spawn_id, self.me, "stopped", reason):
                enqueue(session, ServerStopped(user=row.user, server_name=row.server_name, spawn_id=row.spawn_id,
                                               reason=reason), self.ns)
        self.rt.relay.kick()
        log.info("%s/%s stopped (%s)", row.user, row.server_name, reason)

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
        log.info("adopting %s/%s (%s) from a dead worker", row.user, row.server_name, row.status)
        if row.status == "stopping":
            await self._finish_stop(row, "api")
            return
        if await self._alive(row):
            target = self.backend.target(row.state)
            await put_route(self.rt.bus, route_for(row.user, row.server_name, target, row.spawn_id))
            if row.status == "pending":
                prefix = server_prefix(row.user, row.server_name)
                async with self.rt.sessions() as session, session.begin():
                    if await leases.mark_running(session, row.user, row.server_name, row.spawn_id, self.me, prefix,
                                                 target, row.state):
                        enqueue(session, ServerReady(user=row.user, server_name=row.server_name,
                                                     spawn_id=row.spawn_id, url=prefix, target=target), self.ns)
                self.rt.relay.kick()
            return
        if row.state:
            await self.backend.stop(row.state)
        await delete_route(self.rt.bus, row.user, row.server_name)
        async with self.rt.sessions() as session, session.begin():
            if row.status == "pending":
                msg = "spawner worker died during start"
                if await leases.mark_done(session, row.user, row.server_name, row.spawn_id, self.me, "failed", msg):
                    enqueue(session, ServerFailed(user=row.user, server_name=row.server_name, spawn_id=row.spawn_id,
                                                  message=msg), self.ns)
            elif await leases.mark_done(session, row.user, row.server_name, row.spawn_id, self.me, "stopped", "exited"):
                enqueue(session, ServerStopped(user=row.user, server_name=row.server_name, spawn_id=row.spawn_id,
                                               reason="exited"), self.ns)
        self.rt.relay.kick()

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
                    async with self.rt.sessions() as session, session.begin():
                        if await leases.mark_done(session, row.user, row.server_name, row.spawn_id, self.me,
                                                  "stopped", "exited", ("running",)):
                            enqueue(session, ServerStopped(user=row.user, server_name=row.server_name,
                                                           spawn_id=row.spawn_id, reason="exited"), self.ns)
                    self.rt.relay.kick()
                    log.info("%s/%s exited", row.user, row.server_name)
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
