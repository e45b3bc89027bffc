"""Hub-managed services: `[[services]]` entries with a `command`, run by one spawner worker at a time.

The worker that holds a session-level advisory lock on its own database connection runs every managed
service as a subprocess in its own process group, with JupyterHub's service environment (contract
§f), and restarts one that exits (with backoff while it keeps dying). When that worker stops or dies,
PostgreSQL releases the lock with its connection and another worker takes over within
`CHECK_INTERVAL`. A holder that can no longer reach PostgreSQL stops its services first, so two
workers never run the same service for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleethub.shared.baseurl import public_path
from fleethub.shared.db.locks import AdvisoryLock, try_lock
from fleethub.shared.procs import signal_group
from fleethub.shared.security import service_api_token
from fleethub.shared.settings import HubService, ServiceSettings, kept_environment

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
MAX_BACKOFF = 30.0
STOP_GRACE = 5.0


def service_env(settings: ServiceSettings, secret_key: str, svc: HubService) -> dict[str, str]:
    """The environment of a managed service: the allow-listed variables of ours (`spawner.env_keep`, as
    for user servers), then JupyterHub's service variables, then the service's own `environment`."""
    token = service_api_token(svc.api_token.get_secret_value() if svc.api_token else None, True, secret_key,
                              svc.name) or ""
    access = json.dumps(["access:services", f"access:services!service={svc.name}"])
    env = kept_environment(settings.spawner.env_keep)
    env.update({
        "JUPYTERHUB_SERVICE_NAME": svc.name,
        "JUPYTERHUB_API_TOKEN": token,
        "JPY_API_TOKEN": token,
        "JUPYTERHUB_CLIENT_ID": svc.client_id,
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": access,
        "JUPYTERHUB_OAUTH_SCOPES": access,
        "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": json.dumps(settings.oauth_allowed_scopes(svc)),
        "JUPYTERHUB_API_URL": settings.hub_api_url,
        "JUPYTERHUB_BASE_URL": settings.base_url,
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_USER": "",
    })
    if settings.public_url:
        env["JUPYTERHUB_PUBLIC_HUB_URL"] = f"{settings.hub_public_url}{settings.base_url}hub/"
    if svc.url:
        prefix = public_path(settings.base_url, svc.prefix)
        env.update({
            "JUPYTERHUB_SERVICE_URL": svc.url,
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_OAUTH_CALLBACK_URL": public_path(settings.base_url, svc.redirect_uri),
            "JUPYTERHUB_PUBLIC_URL": f"{settings.hub_public_url}{prefix}" if settings.public_url else "",
        })
    env.update(svc.environment)
    return env


@dataclass
class _Running:
    svc: HubService
    proc: asyncio.subprocess.Process | None = None
    deaths: list[float] = field(default_factory=list)
    due: float = 0.0


class ManagedServices:
    """Runs the managed services while this worker holds the lock."""

    def __init__(self, settings: ServiceSettings, secret_key: str, engine: AsyncEngine) -> None:
        self.settings = settings
        self.secret_key = secret_key
        self.engine = engine
        self.running = {svc.name: _Running(svc) for svc in settings.services if svc.managed}

    async def run(self) -> None:
        """Contend for the lock forever; run the services while holding it."""
        if not self.running:
            return
        try:
            while True:
                try:
                    async with self.engine.connect() as conn:
                        got = await try_lock(conn, AdvisoryLock.MANAGED_SERVICES)
                        await conn.commit()
                        if got:
                            log.info("running the managed services %s", sorted(self.running))
                            await self._hold(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # PostgreSQL away: stop what we run, contend again later
                    log.warning("managed services: %s", exc)
                await self.stop_all()
                await asyncio.sleep(CHECK_INTERVAL)
        finally:
            await self.stop_all()

    async def _hold(self, conn: AsyncConnection) -> None:
        while True:
            now = time.monotonic()
            for entry in self.running.values():
                await self._check(entry, now)
            await asyncio.sleep(CHECK_INTERVAL)
            await conn.execute(text("SELECT 1"))  # the lock lives with this connection: prove it is alive
            await conn.commit()

    async def _check(self, entry: _Running, now: float) -> None:
        proc = entry.proc
        if proc is not None and proc.returncode is None:
            return
        if proc is not None:
            recent = [t for t in entry.deaths if now - t < 60]
            entry.deaths = [*recent, now]
            delay = min(0.5 * 2 ** len(recent), MAX_BACKOFF) if recent else 0.0
            log.error("managed service %s (pid %d) exited with %s; restarting in %.1fs", entry.svc.name, proc.pid,
                      proc.returncode, delay)
            entry.proc = None
            entry.due = now + delay
        if now < entry.due:
            return
        svc = entry.svc
        try:
            entry.proc = await asyncio.create_subprocess_exec(
                *svc.command, env=service_env(self.settings, self.secret_key, svc), cwd=svc.cwd or None,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
            log.info("managed service %s started (pid %d)", svc.name, entry.proc.pid)
        except OSError as exc:
            log.error("managed service %s cannot start: %s", svc.name, exc)
            entry.deaths.append(now)
            entry.due = now + MAX_BACKOFF

    async def stop_all(self) -> None:
        """SIGTERM every service's process group, SIGKILL what is left after a grace period, reap."""
        live = [e.proc for e in self.running.values() if e.proc is not None and e.proc.returncode is None]
        for proc in live:
            signal_group(proc.pid, signal.SIGTERM)
        for proc in live:
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        for entry in self.running.values():
            entry.proc = None
