"""Spawning, stopping, adopting and watching servers: the spawner's logic, one worker's view.

Every transition is committed to `server_states` together with its event (outbox) before the
command is acknowledged (`fleethub.shared.lifecycle.transition`); routes are put before a server is
announced ready and deleted before it is announced stopped. A command's handling returns its ack decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fleethub.services.spawner import leases
from fleethub.services.spawner.authstate import SpawnAuth
from fleethub.services.spawner.backends import Backend, ServerSpec
from fleethub.services.spawner.env import server_env
from fleethub.services.spawner.hooks import HookFailed, Hooks, StopInfo
from fleethub.services.spawner.httpcheck import http_status
from fleethub.services.spawner.propagation import Propagation
from fleethub.services.spawner.routes import delete_route, put_route
from fleethub.shared.authenticators import Authenticator
from fleethub.shared.backend_options import configure_for
from fleethub.shared.baseurl import public_path
from fleethub.shared.bus import Decision
from fleethub.shared.errors import BadRequest, BusError, ConfigError
from fleethub.shared.events import LEGACY_BACKEND, ServerProgress, SpawnServer, StopServer
from fleethub.shared.faults import fault
from fleethub.shared.lifecycle import DONE, ServerKey, ServerStatus, Transition, transition
from fleethub.shared.names import encode_token, server_prefix
from fleethub.shared.profiles import resolve
from fleethub.shared.pulse import Pulse
from fleethub.shared.routes import RESURRECT_GRACE, reconcile_round, route_for
from fleethub.shared.service import Runtime
from fleethub.shared.settings import SpawnerSettings
from fleethub.shared.transient import transient

log = logging.getLogger(__name__)

Heartbeat = Callable[[], Awaitable[None]]

HANDOFF_HOLD = 3  # leases during which a worker leaves a spawn it handed over to the others
POLL_TIMEOUT = 30.0  # seconds one server's poll may take in the poll loop (a hung engine holds up no other)
RECONCILE_EVERY = 60.0  # seconds between route reconciliation rounds when the route bucket does not change
RECONCILE_SPACING = 5.0  # seconds between rounds at least (a busy hub changes routes all the time)
IDLE_WAIT = 60.0  # seconds an idle loop waits for work before it looks anyway
RETRY_DELAY = 0.5  # seconds before a command another worker (or my own in-flight task) is on comes back


class SpawnFailed(Exception):
    """The server could not be started; the message says why."""


class Fenced(Exception):
    """This worker no longer holds the server's lease, or cannot tell (PostgreSQL unreachable): it must not
    act on the server any more; the worker that adopts the row carries the work out."""


class HandOff(Exception):
    """This worker cannot finish the spawn now (the bus is unreachable from here): it releases the lease
    at once, so that a worker that can adopts the row and finishes it; the server is left running."""


async def _no_heartbeat() -> None:
    """The heartbeat of work without a message to keep (an adopted spawn)."""


class Worker:
    """One spawner worker process: its lease holder id, backend and in-flight spawns.

    Fencing: before every action outside PostgreSQL (a backend start or stop, a route written) the worker
    checks, with one statement judged by PostgreSQL's clock, that it still holds the lease (`_fence`), and
    it abandons its in-flight spawns once its renewals have failed for most of a lease (`fence_loop`), so a
    worker cut off from PostgreSQL stops acting before another may adopt its servers.
    """

    def __init__(self, runtime: Runtime, backends: Mapping[str, Backend], authenticator: Authenticator) -> None:
        self.rt = runtime
        self.backends = dict(backends)  # the backends this worker serves, by name
        self.me = runtime.replica
        self.ttl = runtime.settings.spawner.lease_ttl
        self.announcer = runtime.announcer
        self.inflight: dict[ServerKey, asyncio.Task[Any]] = {}  # spawns under way here (a stop cancels them)
        self.working: set[ServerKey] = set()  # every pending or stopping server this worker acts on: renewed
        self.cancelled_by_stop: set[ServerKey] = set()
        self.abandoned: set[ServerKey] = set()
        # a statement that renews a lease must answer within half a lease: one sent at t leaves the lease
        # good until t + ttl (PostgreSQL's clock), so the worker acts well before it can lapse
        self.db_timeout = self.ttl / 2
        self.renewed_at = time.monotonic()  # when the last renewal of all my leases that succeeded was sent
        self.held_at: dict[ServerKey, float] = {}  # when a statement that took or renewed one lease was sent
        self._tasks: set[asyncio.Task[None]] = set()
        self.handed_off: dict[ServerKey, float] = {}  # spawns I handed over (NATS unreachable), until when
        self.metrics = runtime.metrics
        # ready means reachable: every proxy node serves the route (each node's delay observed per node)
        self.propagation = Propagation(runtime.bus, observe=self._propagated)
        self._progress_sends: set[asyncio.Task[None]] = set()
        self.hooks = Hooks(runtime.settings.spawner)  # pre_spawn_hook / post_stop_hook, checked at start
        self.auth = SpawnAuth(runtime.settings, authenticator)  # auth_state and pre_spawn_start
        # for the lease statements that are one UPDATE each (the fence, a state saved, a release): autocommit,
        # which spares a BEGIN and a COMMIT round trip per statement, three times in every spawn
        self.single = runtime.read_sessions or runtime.sessions
        # idle pacing: the loops that have nothing to do wait for `work` (a lease taken here) instead of
        # waking on their period; `taken` counts the leases taken, so a renewal knows none came meanwhile
        self.work = Pulse()
        self.taken = 0
        self.seen_taken = 0  # `taken` when the last renewal that succeeded was sent

    def _take(self, key: ServerKey) -> None:
        """`key`'s lease is (about to be) held here: renewed, fenced and polled from now on."""
        self.working.add(key)
        self.taken += 1
        self.work.notify()

    def _propagated(self, node: str, seconds: float) -> None:
        self.metrics.route_propagation.labels(node=node).observe(seconds)

    def backend_of(self, name: str) -> Backend:
        """The backend `name` (a row's or a command's; empty: written before backends were recorded).

        Raises:
            SpawnFailed: this worker does not serve it (its commands and rows never reach this worker).
        """
        backend = self.backends.get(name or LEGACY_BACKEND)
        if backend is None:
            raise SpawnFailed(f"this worker does not serve the backend {name!r} (it serves "
                              f"{', '.join(sorted(self.backends))})")
        return backend

    async def _record(self, change: Transition) -> leases.Row | None:
        """Make `change` in a transaction of its own; the row as it now is, or None if it was refused."""
        async with self.rt.sessions() as session, session.begin():
            row = await transition(session, change, self.announcer)
            return leases.row_of(row, live=row.worker_id is not None) if row is not None else None

    async def _fence(self, key: ServerKey, spawn_id: str) -> None:
        """Return only if I still hold the live lease of `spawn_id` (renewed by the check).

        Raises:
            Fenced: the lease is another worker's or expired, or PostgreSQL did not answer within half a
                lease.
        """
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self.db_timeout), self.single() as session:
                held = await leases.hold(session, key, spawn_id, me=self.me, ttl=self.ttl)
        except Exception as exc:
            raise Fenced(f"cannot check the lease of {key}: {exc!r}") from exc
        if not held:
            raise Fenced(f"the lease of {key} is no longer mine")
        self.held_at[key] = sent

    async def _save(self, key: ServerKey, spawn_id: str, state: dict[str, Any]) -> None:
        """Record `state` under my live lease.

        Raises:
            Fenced: the lease is lost, or PostgreSQL did not answer.
        """
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self.db_timeout), self.single() as session:
                saved = await leases.save_state(session, key, spawn_id, me=self.me, ttl=self.ttl, state=state)
        except Exception as exc:
            raise Fenced(f"cannot record the state of {key}: {exc!r}") from exc
        if not saved:
            raise Fenced(f"the lease of {key} is no longer mine")
        self.held_at[key] = sent

    # --- spawn -----------------------------------------------------------------------------------

    async def spawn(self, cmd: SpawnServer, heartbeat: Heartbeat) -> Decision:
        """Handle a spawn command (idempotent by spawn id: a late or duplicate one changes nothing).

        A spawn whose worker died is finished by the worker that adopts its row once the lease expires
        (`adopt_loop`), not by the redelivered command, which only follows it until it is done.
        """
        key = ServerKey(cmd.user, cmd.server_name)
        sent = time.monotonic()
        async with self.rt.sessions() as session, session.begin():
            if not await leases.is_desired(session, key, cmd.spawn_id):
                log.warning("spawn %s for %s refused: no longer the requested spawn", cmd.spawn_id, key)
                return Decision.ack()
            claim = Transition.claim(key, cmd.spawn_id, worker=self.me, lease_ttl=self.ttl,
                                     backend=cmd.backend or LEGACY_BACKEND)
            claimed = await transition(session, claim, self.announcer) is not None
            row = None if claimed else await leases.get(session, key)
        if not claimed:
            assert row is not None
            if row.spawn_id != cmd.spawn_id:
                log.warning("spawn %s for %s refused: spawn %s is %s", cmd.spawn_id, key, row.spawn_id, row.status)
                return Decision.ack()
            if row.status in (ServerStatus.PENDING, ServerStatus.STOPPING):
                # another worker (or my own task) is on it, or its worker died and an adopter will be: follow
                return Decision.nak(RETRY_DELAY)
            return Decision.ack()  # already running, stopped or failed: nothing to do
        self.held_at[key] = sent
        fault("spawner.after_lease_before_start")
        return await self._run_spawn(cmd, heartbeat)

    async def _run_spawn(self, cmd: SpawnServer, heartbeat: Heartbeat, found: dict[str, Any] | None = None) -> Decision:
        """Carry out a spawn whose lease I hold, as this task (a stop of it cancels the task)."""
        key = ServerKey(cmd.user, cmd.server_name)
        task = asyncio.current_task()
        assert task is not None
        self.inflight[key] = task
        self._take(key)
        try:
            await self._start(cmd, heartbeat, found)
        except asyncio.CancelledError:
            if key in self.abandoned:
                # fenced off (see `fence_loop`): leave the server as it is, the adopter carries the spawn out
                self.abandoned.discard(key)
                task.uncancel()
                return Decision.nak(RETRY_DELAY)
            if key not in self.cancelled_by_stop:
                raise  # shutting down: the command is redelivered, the lease expires, another worker decides
            # a stop took this spawn over and records its outcome: the spawn command is done
            self.cancelled_by_stop.discard(key)
            task.uncancel()
        except Fenced as exc:
            log.warning("gave up the spawn of %s: %s", key, exc)
            return Decision.nak(RETRY_DELAY)
        except HandOff as exc:
            log.warning("handing the spawn of %s over to another worker: %s", key, exc)
            # not adopted back by me while the reason lasts (my adoption pass may well come first)
            self.handed_off[key] = time.monotonic() + HANDOFF_HOLD * self.ttl
            await self._release(key, cmd.spawn_id)
            return Decision.nak(RETRY_DELAY)
        finally:
            self.inflight.pop(key, None)
            self.working.discard(key)
            self.held_at.pop(key, None)
            self.abandoned.discard(key)  # a cancel that came too late to land leaves nothing behind
        return Decision.ack()

    async def _release(self, key: ServerKey, spawn_id: str) -> None:
        """Let my lease of `spawn_id` expire now (best effort: unrenewed, it expires within a lease anyway)."""
        try:
            async with asyncio.timeout(self.db_timeout), self.single() as session:
                await leases.release(session, key, spawn_id, me=self.me)
        except Exception as exc:
            log.warning("could not release the lease of %s: %r", key, exc)

    async def _start(self, cmd: SpawnServer, heartbeat: Heartbeat, found: dict[str, Any] | None = None) -> None:
        """Start `cmd`'s server (or, given the state of one `found` running, finish its start)."""
        key = ServerKey(cmd.user, cmd.server_name)
        # where the server serves (under the base_url; its route on the bus stays unprefixed)
        prefix = public_path(self.rt.settings.base_url, server_prefix(cmd.user, cmd.server_name))
        began = time.monotonic()
        await self._progress(cmd, 0, "Server requested")
        try:
            choice = resolve(self.rt.settings.spawner, cmd.user_options, configure_for)
        except (BadRequest, ConfigError) as exc:  # the api checked the options: the settings changed since
            await self._fence(key, cmd.spawn_id)
            if found:  # an adopted spawn whose server runs (its profile removed since): it goes, never orphaned
                await self.backend_of(cmd.backend).stop(found)
            await self._failed(key, cmd.spawn_id, dict(found or {}), str(exc))
            return

        reported = 0

        async def progress(message: str) -> None:
            # a backend reports steps, not percentages: each one halves what is left below 50 (25, 38, 44, ...),
            # where "Spawning server..." takes over once its start returned, so the page's bar moves with each
            nonlocal reported
            reported += 1
            await self._progress(cmd, 50 - (50 >> reported), message)

        spec = ServerSpec(
            user=cmd.user, server_name=cmd.server_name, spawn_id=cmd.spawn_id, prefix=prefix,
            env=server_env(self.rt.settings, self.rt.secret_key, cmd.user, cmd.server_name, cmd.spawn_id,
                           config=choice.config),
            user_options=dict(choice.user_options),
            log_path=self.rt.settings.data_dir / "logs"
            / f"{encode_token(cmd.user)}.{encode_token(cmd.server_name)}.log",
            config=choice.config, progress=progress,
        )
        state: dict[str, Any] = dict(found or {})
        backend = self.backend_of(cmd.backend)
        s = choice.config  # this spawn's timeouts: its profile may give a slow backend longer
        try:
            if not state:
                spec = await self._pre_spawn(spec)
                # the identity is recorded before anything exists, so an adopter can find what start makes
                planned = backend.identity(spec)
                await self._save(key, cmd.spawn_id, planned)
                state = planned
                try:
                    state = await asyncio.wait_for(backend.start(spec, planned), s.start_timeout)
                except TimeoutError:
                    raise SpawnFailed(f"server did not start within {s.start_timeout:.0f}s") from None
                except Exception as exc:  # whatever the backend raises, its start failed: say what it said
                    raise SpawnFailed(str(exc) or type(exc).__name__) from exc
                fault("spawner.after_backend_create")
                await self._save(key, cmd.spawn_id, state)
                fault("spawner.after_state_saved")
            await self._progress(cmd, 50, "Spawning server...")
            target = backend.target(state)
            await self._wait_ready(f"{target}{prefix}api", backend, state, s, heartbeat)
            await self._fence(key, cmd.spawn_id)
            try:
                # tried for about a lease: a NATS restart is ridden out, a partition of this worker alone
                # hands the spawn to one that reaches NATS instead of holding it for the whole retry budget
                written = time.monotonic()
                with self.metrics.timed(self.metrics.proxy_add):
                    revision = await put_route(self.rt.bus, route_for(cmd.user, cmd.server_name, target,
                                                                      cmd.spawn_id), retry_for=self.ttl)
            except Exception as exc:  # the server is fine: a worker that reaches the bus finishes its start
                raise HandOff(f"route not written: {exc!r}") from exc
            await self.propagation.wait_served(revision, f"spawn of {key}", written)
            ready = Transition.ready(key, cmd.spawn_id, worker=self.me, url=prefix, target=target, state=state)
            if await self._record(ready) is None:  # lost the lease meanwhile: its adopter finishes the spawn
                log.warning("lost the lease of %s during start", key)
            else:
                self.metrics.spawn_duration.labels(status="success").observe(time.monotonic() - began)
                log.info("%s ready at %s", key, target)
            fault("spawner.after_route_before_ack")
        except asyncio.CancelledError:
            # a stop for this spawn: end what was started; the stop records the outcome. Abandoned (fenced
            # off) or shut down: touch nothing, the worker that adopts the row finishes the spawn
            if state and key in self.cancelled_by_stop:
                await asyncio.shield(backend.stop(state))
            raise
        except (Fenced, HandOff):
            raise
        except Exception as exc:
            if transient(exc) and not isinstance(exc, SpawnFailed):
                # PostgreSQL or NATS is away, not the server at fault: the lease (no longer renewed once
                # this task ends) decides who finishes the spawn when they are back; never a failed spawn
                raise
            # a failure that comes back every time (a backend's error, a bug): the spawn fails with its
            # message, rather than being retried forever by adopters
            log.warning("spawn of %s failed: %s", key, exc, exc_info=not isinstance(exc, SpawnFailed))
            self.metrics.spawn_duration.labels(status="failure").observe(time.monotonic() - began)
            await self._fence(key, cmd.spawn_id)
            if state:
                await backend.stop(state)
            await self._delete_route(cmd.user, cmd.server_name)
            await self._failed(key, cmd.spawn_id, state, str(exc))

    async def _delete_route(self, user: str, server_name: str) -> None:
        with self.metrics.timed(self.metrics.proxy_delete):
            await delete_route(self.rt.bus, user, server_name)

    async def _pre_spawn(self, spec: ServerSpec) -> ServerSpec:
        """`spec` with the user's auth_state, as the authenticator's `pre_spawn_start` and then the spawn's
        `pre_spawn_hook` leave it; a refusal of either fails the spawn with its message."""
        try:
            return await self.hooks.pre_spawn(await self.auth.prepare(self.rt.sessions, spec))
        except HookFailed as exc:
            raise SpawnFailed(str(exc)) from exc

    async def _failed(self, key: ServerKey, spawn_id: str, state: dict[str, Any], message: str) -> None:
        """Record the spawn failed (under my lease) and tell the post-stop hook."""
        if await self._record(Transition.failed(key, spawn_id, worker=self.me, message=message)) is not None:
            self.hooks.after_stop(StopInfo(key.user, key.server_name, spawn_id, state, ServerStatus.FAILED.value,
                                           message))

    async def _stopped(self, row: leases.Row, reason: str, expected: frozenset[ServerStatus] = frozenset()) -> bool:
        """Record `row`'s server stopped (under my lease) and tell the post-stop hook; whether it was recorded."""
        change = Transition.stopped(row.key, row.spawn_id, worker=self.me, reason=reason, expected=expected)
        if await self._record(change) is None:
            return False
        self.hooks.after_stop(StopInfo(row.user, row.server_name, row.spawn_id, dict(row.state or {}), reason))
        return True

    async def _wait_ready(self, url: str, backend: Backend, state: dict[str, Any], s: SpawnerSettings,
                          heartbeat: Heartbeat) -> None:
        deadline = time.monotonic() + s.http_timeout
        last_beat = time.monotonic()
        while True:
            status = await http_status(url, timeout=min(2.0, s.http_timeout))
            if status is not None and status < 500:
                return
            if not await backend.poll(state):
                raise SpawnFailed("server process exited before answering HTTP")
            if time.monotonic() > deadline:
                raise SpawnFailed(f"server did not answer HTTP within {s.http_timeout:.0f}s")
            if time.monotonic() - last_beat > 5:
                try:
                    await heartbeat()
                except Exception as exc:  # the command may come back to another worker: the lease decides
                    log.debug("heartbeat not sent: %r", exc)
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
            self.cancelled_by_stop.discard(key)
        elif key in self.working:
            return Decision.nak(RETRY_DELAY)  # I am adopting it (finishing a stop, checking it runs): follow
        elif (row.status in (ServerStatus.PENDING, ServerStatus.STOPPING) and row.lease_live
              and row.worker_id != self.me):
            return Decision.nak(RETRY_DELAY)  # another worker is starting or stopping it: follow, never race
        claimed = await self._record(Transition.stopping(key, row.spawn_id, worker=self.me, lease_ttl=self.ttl))
        if claimed is None:
            return Decision.nak(RETRY_DELAY)
        try:
            await self._finish_stop(claimed, cmd.reason)
        except Fenced as exc:
            log.warning("gave up the stop of %s: %s", key, exc)
            return Decision.nak(RETRY_DELAY)
        return Decision.ack()

    async def _finish_stop(self, row: leases.Row, reason: str) -> None:
        """Delete the route, end the server (found by its identity), record it stopped; under my lease."""
        self._take(row.key)
        try:
            with self.metrics.timed(self.metrics.stop_duration):
                await self._fence(row.key, row.spawn_id)
                await self._delete_route(row.user, row.server_name)
                if row.state:
                    await self.backend_of(row.backend).stop(row.state)
                fault("spawner.stop_after_backend_kill")
                await self._stopped(row, reason)
            log.info("%s stopped (%s)", row.key, reason)
        finally:
            self.working.discard(row.key)
            self.held_at.pop(row.key, None)

    # --- background loops ------------------------------------------------------------------------

    async def renew_loop(self) -> None:
        """Renew my leases every quarter lease; a renewal that gets no answer within a third of one fails.

        A worker that holds nothing sends no statement: the last renewal renewed none, nothing is `working`,
        and no lease was taken since it was sent (every lease is taken by `_take`)."""
        held = True  # not known yet
        while True:
            await asyncio.sleep(self.ttl / 4)
            sent = time.monotonic()
            taken = self.taken
            if not held and not self.working and taken == self.seen_taken:
                self.renewed_at = sent  # all of none renewed: the fence of a spawn taken next starts from here
                continue
            try:
                async with asyncio.timeout(self.db_timeout), self.rt.sessions() as session, session.begin():
                    held = await leases.renew(session, self.me, self.ttl, set(self.working)) > 0
            except Exception as exc:
                log.warning("lease renewal failed: %r", exc)
                held = True
                continue
            self.seen_taken = taken
            if sent - self.renewed_at > self.ttl:
                log.info("leases renewed again after %.1fs without", sent - self.renewed_at)
            self.renewed_at = sent

    async def fence_loop(self) -> None:
        """Abandon an in-flight spawn once its lease has not been renewed for three quarters of a lease.

        A lease renewed by a statement sent at t lasts at least until t + ttl by PostgreSQL's clock, so a
        worker that gives up before then never acts after another worker may have adopted its servers
        (time here is this process's monotonic clock: a wrong wall clock does not matter). Abandoned
        spawns are left as they are; their adopter finds the server by its recorded identity.
        """
        while True:
            if self.inflight:
                await asyncio.sleep(self.ttl / 10)
            else:  # a spawn goes in flight only after `_take`
                await self.work.wait(IDLE_WAIT)
                continue
            now = time.monotonic()
            for key, task in list(self.inflight.items()):
                since = now - max(self.renewed_at, self.held_at.get(key, 0.0))
                if since > self.ttl * 0.75 and key not in self.abandoned:
                    log.warning("lease of %s not renewed for %.1fs: abandoning its spawn to an adopter", key, since)
                    self.abandoned.add(key)
                    task.cancel()

    async def adopt_loop(self, interval: float | None = None) -> None:
        """Adopt rows whose lease expired (their worker died, or was cut off): each in a task of its own.

        Paced by the leases there are: a pass first asks PostgreSQL when the next lease of my backends
        expires, adopts only if one has, and otherwise sleeps until that expiry (at least `interval`, a third
        of a lease by default) or a whole lease when none is held anywhere. A lease taken after a look expires
        a whole lease after it was taken, so sleeping a lease at most never finds it later than a pass every
        `interval` would (an idle hub: one query a lease, not three)."""
        interval = self.ttl / 3 if interval is None else interval
        while True:
            now = time.monotonic()
            self.handed_off = {k: until for k, until in self.handed_off.items() if until > now}
            try:
                async with self._reads() as session:
                    due = await leases.next_expiry(session, self.backends.keys(), skip=self.handed_off.keys())
            except Exception as exc:
                log.warning("adoption pass failed: %r", exc)
                await asyncio.sleep(interval)
                continue
            if due is not None and due <= 0:
                await self._adopt_pass()
                await asyncio.sleep(interval)
            else:  # look again then: the lease may have been renewed meanwhile
                await asyncio.sleep(self.ttl if due is None else min(max(due, 0.05), self.ttl))

    def _reads(self) -> Any:
        return (self.rt.read_sessions or self.rt.sessions)()

    async def _adopt_pass(self) -> None:
        sent = time.monotonic()
        try:
            async with self.rt.sessions() as session, session.begin():
                rows = await leases.adopt_expired(session, self.me, self.ttl, self.backends.keys(),
                                                  skip=self.handed_off.keys())
        except Exception as exc:
            log.warning("adoption pass failed: %r", exc)
            return
        for row in rows:
            if row.key in self.working:
                continue  # my own work in flight, its lease lapsed and taken back by me: it goes on
            self._take(row.key)  # renewed from now on
            self.held_at[row.key] = sent
            task = asyncio.get_running_loop().create_task(self._adopt(row), name=f"adopt {row.key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _alive(self, row: leases.Row) -> bool:
        backend = self.backend_of(row.backend)
        if not row.state or not await backend.poll(row.state):
            return False
        prefix = public_path(self.rt.settings.base_url, server_prefix(row.user, row.server_name))
        status = await http_status(f"{backend.target(row.state)}{prefix}api")
        return status is not None and status < 500

    async def _adopt(self, row: leases.Row) -> None:
        log.info("adopting %s (%s) from a dead worker", row.key, row.status)
        try:
            if row.status == ServerStatus.STOPPING:
                await self._finish_stop(row, "api")
            elif row.status == ServerStatus.PENDING:
                await self._resume(row)
            else:
                await self._adopt_running(row)
        except Fenced as exc:
            log.warning("gave up adopting %s: %s", row.key, exc)
        except Exception:
            log.exception("adopting %s failed; it is adopted again once its lease expires", row.key)
        finally:
            self.working.discard(row.key)
            self.held_at.pop(row.key, None)

    async def _resume(self, row: leases.Row) -> None:
        """Finish a spawn whose worker died: keep the server its identity finds alive, else start it anew."""
        async with self.rt.sessions() as session:
            options = await leases.requested_options(session, row.key, row.spawn_id)
        if options is None:  # stopped, removed or replaced meanwhile: end whatever the spawn made
            claimed = await self._record(Transition.stopping(row.key, row.spawn_id, worker=self.me,
                                                             lease_ttl=self.ttl))
            if claimed is not None:
                await self._finish_stop(claimed, "api")
            return
        backend = self.backend_of(row.backend)
        found = await backend.locate(row.state) if row.state else None
        if found is None and row.state:
            await self._fence(row.key, row.spawn_id)
            await backend.stop(row.state)  # a half-made server (a zombie, a stuck container) goes first
        cmd = SpawnServer(user=row.user, server_name=row.server_name, spawn_id=row.spawn_id, user_options=options,
                          backend=row.backend)
        log.info("finishing the spawn %s of %s (%s)", row.spawn_id, row.key,
                 "its server runs" if found else "starting it")
        await self._run_spawn(cmd, _no_heartbeat, found)

    async def _adopt_running(self, row: leases.Row) -> None:
        """Keep a running server that answers (its route put again); record one that died stopped."""
        if await self._alive(row):
            await self._fence(row.key, row.spawn_id)
            target = self.backend_of(row.backend).target(row.state)
            await put_route(self.rt.bus, route_for(row.user, row.server_name, target, row.spawn_id))
            return
        await self._fence(row.key, row.spawn_id)
        if row.state:
            await self.backend_of(row.backend).stop(row.state)
        await delete_route(self.rt.bus, row.user, row.server_name)
        await self._stopped(row, "exited")

    async def poll_loop(self, interval: float = 2.0) -> None:
        """Notice servers of mine whose process exited; while I hold none and work on none, wait for a lease
        taken here (a server becomes mine only by my own spawn or adoption) instead of looking every pass."""
        rows: list[leases.Row] = []
        while True:
            if rows or self.working:
                await asyncio.sleep(interval)
            else:
                await self.work.wait(IDLE_WAIT)
            try:
                async with self.rt.sessions() as session:
                    rows = await leases.owned_running(session, self.me)
                for row in rows:
                    try:  # one backend not answering (a scheduler, an engine) holds up no other server's poll
                        state = row.state
                        polled = time.monotonic()
                        alive: bool = bool(state) and await asyncio.wait_for(
                            self.backend_of(row.backend).poll(dict(state or {})), POLL_TIMEOUT)
                        polled_as = ServerStatus.RUNNING if alive else ServerStatus.STOPPED  # JupyterHub's labels
                        self.metrics.poll_duration.labels(status=polled_as).observe(time.monotonic() - polled)
                        if alive:
                            continue
                    except Exception as exc:  # the backend's own failure (a poll touches neither PostgreSQL nor NATS)
                        log.warning("poll of %s failed: %r", row.key, exc)
                        continue  # never recorded gone on a failed poll: tried again next pass
                    await self._fence(row.key, row.spawn_id)
                    await self._delete_route(row.user, row.server_name)
                    if await self._stopped(row, "exited", expected=frozenset({ServerStatus.RUNNING})):
                        log.info("%s exited", row.key)
            except Exception as exc:
                log.warning("poll pass failed: %s", exc)

    async def reconcile_loop(self, interval: float = RECONCILE_EVERY, spacing: float = RECONCILE_SPACING) -> None:
        """Repair the route table from PostgreSQL and the configured services; one worker at a time.

        A round runs at once (the services' routes exist as soon as a worker is up), then whenever the route
        bucket changes (a watch of it: a route put or deleted behind the hub's back, a bucket a restarted
        NATS lost), at most one each `spacing` seconds, and every `interval` seconds anyway (PostgreSQL's
        side). A round after a change is followed by one more once `RESURRECT_GRACE` has passed: a route
        deleted moments before the first is left alone by it, and repaired by the second if still missing.
        An idle hub lists no keys: the watch costs a heartbeat every 5 s.
        """
        changed = asyncio.Event()
        watch = asyncio.get_running_loop().create_task(self._watch_routes(changed), name="watch routes")
        follow_up = True
        try:
            while True:
                started = time.monotonic()
                changed.clear()
                try:
                    with self.metrics.check_routes.time():
                        await reconcile_round(self.rt.engine, self.rt.sessions, self.rt.bus,
                                              self.rt.settings.services)
                except Exception as exc:
                    log.warning("route reconciliation failed: %s", exc)
                    changed.set()  # tried again after `spacing`
                wait = RESURRECT_GRACE + 0.5 if follow_up else interval
                try:
                    await asyncio.wait_for(changed.wait(), max(0.0, started + wait - time.monotonic()))
                    follow_up = True
                except TimeoutError:
                    follow_up = False
                await asyncio.sleep(max(0.0, started + spacing - time.monotonic()))
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _watch_routes(self, changed: asyncio.Event) -> None:
        def seen(*_: object) -> None:
            changed.set()

        while True:
            try:
                await self.rt.bus.routes.follow(seen, changed.set)
            except BusError as exc:
                log.debug("watch of the route bucket ended (%s); watching again", exc)
            await asyncio.sleep(1.0)
