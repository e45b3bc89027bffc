"""Starting and stopping servers: desired state, the server's token and the command, in one transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import ApiToken, Server, ServerState, User
from shared.errors import BadRequest, TooManyRequests
from shared.events import SpawnServer, StopServer, TokenRevoked, new_id, utcnow
from shared.names import server_prefix
from shared.outbox import enqueue
from shared.security import hash_token, server_token
from shared.settings import ServiceSettings

from services.api.queries import one_server_view

SERVER_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,29}$")
RETRY_AFTER = 30


@dataclass(frozen=True)
class StartResult:
    """What a start request did: `started` (a new spawn) or `pending` (one already under way)."""

    spawn_id: str
    started: bool


def check_server_name(name: str) -> None:
    """New server names: 1-30 of [a-z0-9-], starting with a letter, no double or trailing hyphen."""
    if not SERVER_NAME_RE.match(name):
        raise BadRequest(
            f"Invalid server name {name[:64]!r}: 1-30 lowercase letters, digits or single hyphens, starting with a letter"
        )


async def _check_limits(session: AsyncSession, settings: ServiceSettings) -> None:
    """Hub-wide limits, counted in PostgreSQL so they hold across api replicas."""
    api = settings.api
    if not api.concurrent_spawn_limit and not api.active_server_limit:
        return
    state = ServerState
    joined = (
        select(Server.id)
        .join(User, User.id == Server.user_id)
        .outerjoin(state, and_(state.user_name == User.name, state.server_name == Server.name,
                               state.spawn_id == Server.spawn_id))
    )
    if api.concurrent_spawn_limit:
        pending = joined.where(Server.desired == "running", or_(state.status.is_(None), state.status == "pending"))
        n = (await session.execute(select(func.count()).select_from(pending.subquery()))).scalar_one()
        if n >= api.concurrent_spawn_limit:
            raise TooManyRequests("Too many users trying to log in right now. Try again in a minute.", retry_after=RETRY_AFTER)
    if api.active_server_limit:
        active = joined.where(Server.desired == "running",
                              or_(state.status.is_(None), state.status.in_(("pending", "running"))))
        n = (await session.execute(select(func.count()).select_from(active.subquery()))).scalar_one()
        if n >= api.active_server_limit:
            raise TooManyRequests("Active user limit exceeded. Try again in a few minutes.", retry_after=RETRY_AFTER)


async def start_server(session: AsyncSession, settings: ServiceSettings, secret_key: str, user: User,
                       server_name: str, user_options: dict[str, Any] | None) -> StartResult:
    """Record desired state 'running' under a new spawn id, the server's token and the spawn command.

    Raises:
        BadRequest: already running, or stopping.
        TooManyRequests: a hub-wide limit is reached.
    """
    await session.execute(
        insert(Server).values(user_id=user.id, name=server_name, desired="stopped", user_options={})
        .on_conflict_do_nothing(index_elements=["user_id", "name"])
    )
    view = await one_server_view(session, user, server_name, lock=True)
    assert view is not None
    active, ready, pending = view.status
    label = f"{user.name}'s server" + (f" {server_name}" if server_name else "")
    if pending == "spawn":
        assert view.server.spawn_id is not None
        return StartResult(view.server.spawn_id, started=False)
    if ready and pending is None:
        raise BadRequest(f"{label} is already running")
    if active:
        raise BadRequest(f"{label} is pending {pending or 'stop'}, please wait")
    await _check_limits(session, settings)
    spawn_id = new_id()
    srv = view.server
    srv.desired = "running"
    srv.spawn_id = spawn_id
    if user_options is not None:
        srv.user_options = user_options
    srv.requested_at = utcnow()
    prefix = server_prefix(user.name, server_name)
    session.add(ApiToken(
        user_id=user.id, hashed=hash_token(server_token(secret_key, spawn_id)), kind="server",
        note=f"Server at {prefix}", spawn_id=spawn_id,
        scopes=[f"users:activity!user={user.name}", f"access:servers!server={user.name}/{server_name}"],
    ))
    enqueue(session, SpawnServer(user=user.name, server_name=server_name, spawn_id=spawn_id,
                                 user_options=srv.user_options or {}), settings.nats_namespace)
    return StartResult(spawn_id, started=True)


async def stop_server(session: AsyncSession, settings: ServiceSettings, user: User, server_name: str,
                      reason: str = "api") -> str | None:
    """Record desired state 'stopped' and send the stop command; returns the spawn id to wait for.

    None means nothing was running.
    """
    view = await one_server_view(session, user, server_name, lock=True)
    if view is None:
        return None
    active, _, _ = view.status
    spawn_id = view.server.spawn_id if view.current_state is not None or view.server.desired == "running" else None
    if view.state is not None and view.current_state is None and view.state.status in ("pending", "running", "stopping"):
        spawn_id = view.state.spawn_id  # an older spawn still running
    view.server.desired = "stopped"
    if not active or spawn_id is None:
        return None
    # a repeated stop is harmless: the spawner's handler is idempotent by spawn id
    enqueue(session, StopServer(user=user.name, server_name=server_name, spawn_id=spawn_id, reason=reason),
            settings.nats_namespace)
    return spawn_id


async def remove_server(session: AsyncSession, user: User, server_name: str) -> None:
    """Delete a named server's record (after its stop was requested)."""
    await session.execute(delete(Server).where(Server.user_id == user.id, Server.name == server_name))


async def count_named(session: AsyncSession, user: User) -> int:
    """How many named servers `user` has."""
    return (await session.execute(
        select(func.count()).select_from(Server).where(Server.user_id == user.id, Server.name != "")
    )).scalar_one()


async def server_ended(session: AsyncSession, spawn_id: str, namespace: str | None = None) -> None:
    """A spawn stopped or failed: its tokens stop working, and its desired state follows (idempotent).

    Its own token and the OAuth tokens its users got for it are deleted; with `namespace`, each
    deletion is announced (`token.revoked`) so every api replica drops it from its cache at once.
    """
    gone = (await session.execute(
        delete(ApiToken).where(ApiToken.kind.in_(("server", "oauth")), ApiToken.spawn_id == spawn_id)
        .returning(ApiToken.id)
    )).scalars().all()
    if namespace is not None:
        for token_id in gone:
            enqueue(session, TokenRevoked(token_id=token_id), namespace)
    await session.execute(
        update(Server).where(Server.spawn_id == spawn_id, Server.desired == "running").values(desired="stopped")
    )