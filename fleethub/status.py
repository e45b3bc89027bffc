"""`fleethub status`: a deployment's services and their replicas, the command and event queues, dead letters,
and the running and pending servers, as a table or as JSON (`--json`).

Replicas are those that answer a status ping on the bus within `--wait` seconds (`fleethub.shared.bus.presence`);
queue depths come from JetStream's own counts; servers and dead letters from PostgreSQL. It finds the
deployment as `fleethub token` does: the configured URLs, else those of the `fleethub up` running on the
data dir (its runtime.json); it connects to NATS as the read-only `status` identity (`nats_nkey_file`, else
the seed `fleethub up` keeps in the data dir). NATS and PostgreSQL are asked independently: what one can
tell is printed even when the other is away, and an unreachable one is named, with a nonzero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from fleethub.shared.bus import ConsumerDepth, ReplicaInfo, StreamDepth
from fleethub.shared.errors import ConfigError
from fleethub.shared.logging import scrub
from fleethub.shared.settings import ServiceSettings, load_settings

SERVICES = ("auth", "api", "spawner", "proxy", "culler")
STATUS_IDENTITY = "status"
RECENT_DEAD_LETTERS = 5
CONNECT_TIMEOUT = 5.0
REQUESTED = "requested"
"""A server's status in the report while no worker has claimed its spawn yet."""


class ServerRow(BaseModel):
    """A server that runs or is asked to."""

    user: str
    server: str = Field(description="Empty for the default server.")
    status: str = Field(description="The spawner's status of the requested spawn (pending, running, stopping), "
                                    "or 'requested' while no worker has taken it.")
    backend: str
    worker: str | None
    started: datetime | None
    url: str | None


class DeadLetterInfo(BaseModel):
    """A message a consumer gave up on."""

    consumer: str
    subject: str
    reason: str
    created: datetime


class Status(BaseModel):
    """Everything `fleethub status` reports; `errors` names what could not be reached."""

    namespace: str
    services: dict[str, list[ReplicaInfo]] = Field(default_factory=dict)
    streams: list[StreamDepth] = Field(default_factory=list)
    dead_letters: int | None = None
    recent_dead_letters: list[DeadLetterInfo] = Field(default_factory=list)
    servers: list[ServerRow] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    nats_ok: bool = False
    database_ok: bool = False

    @property
    def consumers(self) -> list[ConsumerDepth]:
        """Every durable consumer of both streams."""
        return [c for s in self.streams for c in s.consumers]


def _runtime(settings: ServiceSettings) -> dict[str, Any] | None:
    """The runtime file of a `fleethub up` alive on the data dir, or None."""
    from fleethub.shared.procs import pid_alive
    from fleethub.up import read_runtime

    runtime = read_runtime(settings.data_dir.resolve())
    return runtime if runtime is not None and pid_alive(int(runtime.get("pid", 0))) else None


def locate(settings: ServiceSettings) -> tuple[str, str, Path | None]:
    """The NATS URL, the database URL and the `status` seed of the deployment `settings` describe.

    Raises:
        ConfigError: neither configured nor a running `fleethub up` on the data dir, naming what is missing.
    """
    from fleethub.shared.bus.natsconfig import seed_file
    from fleethub.up import NATS_KEYS_DIR

    configured = settings.model_fields_set
    runtime = None if {"nats_url", "database_url"} <= configured else _runtime(settings)
    where = f"no `fleethub up` is running on {settings.data_dir.resolve()}"
    if "nats_url" in configured:
        nats_url = settings.nats_url
    elif runtime is not None:
        nats_url = str(runtime["nats_url"])
    else:
        raise ConfigError(f"{where}: set nats_url (FLEETHUB_NATS_URL) or pass its --data-dir / --config")
    if "database_url" in configured:
        database_url = settings.require_database_url()
    elif runtime is not None:
        database_url = str(runtime["database_url"])
    else:
        raise ConfigError(f"{where}: set database_url (FLEETHUB_DATABASE_URL) or pass its --data-dir / --config")
    seed = settings.nats_nkey_file
    if seed is None:
        kept = seed_file(settings.data_dir.resolve() / NATS_KEYS_DIR, STATUS_IDENTITY)
        seed = kept if kept.exists() else None
    return nats_url, database_url, seed


async def _from_bus(settings: ServiceSettings, nats_url: str, seed: Path | None, status: Status,
                    wait: float) -> None:
    from fleethub.shared.bus import Bus, BusError, Credentials

    creds = Credentials(identity=STATUS_IDENTITY, nkey_file=seed, tls_ca_file=settings.nats_tls_ca_file,
                        tls_cert_file=settings.nats_tls_cert_file, tls_key_file=settings.nats_tls_key_file)
    bus = Bus(nats_url, settings.nats_namespace, f"status-{int(time.time())}", creds)
    try:
        # bounded here: with unlimited reconnects, nats-py retries a refused first connection forever
        await asyncio.wait_for(bus.connect(timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT)
        replicas = await bus.gather_replicas(wait)
        status.streams = await bus.stream_depths()
        status.nats_ok = True
    except (BusError, TimeoutError) as exc:
        why = exc.message if isinstance(exc, BusError) else f"no connection within {CONNECT_TIMEOUT:.0f}s"
        status.errors.append(scrub(f"cannot reach NATS (nats_url {nats_url}): {why}"))
        return
    finally:
        await bus.close()
    for info in replicas:
        status.services.setdefault(info.service, []).append(info)


async def _from_database(database_url: str, status: Status) -> None:
    from sqlalchemy import and_, func, or_, select
    from sqlalchemy.engine import make_url

    from fleethub.shared.db.engine import make_engine
    from fleethub.shared.db.models import DeadLetterRow, Server, ServerState, User
    from fleethub.shared.lifecycle import DesiredState, ServerStatus

    shown = make_url(database_url).render_as_string(hide_password=True)
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            live = (ServerStatus.PENDING, ServerStatus.RUNNING, ServerStatus.STOPPING)
            rows = (await conn.execute(
                select(User.name, Server.name, Server.spawn_id, Server.backend, ServerState.spawn_id,
                       ServerState.status, ServerState.backend, ServerState.worker_id, ServerState.started,
                       ServerState.url)
                .join(Server, Server.user_id == User.id)
                .outerjoin(ServerState, and_(ServerState.user_name == User.name,
                                             ServerState.server_name == Server.name))
                .where(or_(Server.desired == DesiredState.RUNNING, ServerState.status.in_(live)))
                .order_by(User.name, Server.name))).all()
            count = (await conn.execute(select(func.count()).select_from(DeadLetterRow))).scalar_one()
            recent = (await conn.execute(
                select(DeadLetterRow.consumer, DeadLetterRow.subject, DeadLetterRow.reason, DeadLetterRow.created)
                .order_by(DeadLetterRow.id.desc()).limit(RECENT_DEAD_LETTERS))).all()
    except Exception as exc:  # refused, unknown host, bad password, not migrated: named, not a traceback
        status.errors.append(scrub(f"cannot reach PostgreSQL (database_url {shown}): {type(exc).__name__}: {exc}"))
        return
    finally:
        await engine.dispose()
    for user, name, spawn_id, backend, state_spawn, state, state_backend, worker, started, url in rows:
        current = state is not None and state_spawn == spawn_id
        if not current and state not in live:
            state = REQUESTED  # desired running, not yet claimed by a worker (or the claim is of an older spawn)
        status.servers.append(ServerRow(user=user, server=name, status=str(state), backend=state_backend or backend,
                                        worker=worker, started=started, url=url))
    status.dead_letters = int(count)
    status.recent_dead_letters = [DeadLetterInfo(consumer=c, subject=s, reason=r[:300], created=t)
                                  for c, s, r, t in recent]
    status.database_ok = True


async def gather(settings: ServiceSettings, wait: float = 1.0) -> Status:
    """The status of the deployment `settings` describes (NATS and PostgreSQL asked at once).

    Raises:
        ConfigError: the deployment cannot be found (see `locate`).
    """
    nats_url, database_url, seed = locate(settings)
    status = Status(namespace=settings.nats_namespace)
    await asyncio.gather(_from_bus(settings, nats_url, seed, status, wait), _from_database(database_url, status))
    for service in SERVICES:
        status.services.setdefault(service, [])
    status.services = dict(sorted(status.services.items(), key=lambda kv: (kv[0] not in SERVICES, kv[0])))
    return status


def status(args: argparse.Namespace) -> int:
    """Print the deployment's status; 1 when NATS or PostgreSQL could not be reached."""
    from fleethub.status_table import render

    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.wait <= 0 or args.wait > 30:
        raise ConfigError("--wait must be more than 0 and at most 30 seconds")
    # the bus's own logs of a failing connection would repeat what the report says once
    logging.getLogger("fleethub.shared.bus").setLevel(logging.CRITICAL)
    report = asyncio.run(gather(load_settings(args.config, **overrides), args.wait))
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(render(report, time.time()))
    for error in report.errors:
        print(f"fleethub: error: {error}", file=sys.stderr)
    return 1 if report.errors else 0
