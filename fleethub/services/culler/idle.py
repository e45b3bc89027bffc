"""Which servers are idle: the policy as plain functions over rows, no I/O of its own."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import Server, ServerState, User
from fleethub.shared.lifecycle import ServerKey, ServerStatus


@dataclass(frozen=True)
class RunningServer:
    """A running server and the newest activity known for it."""

    user: str
    server_name: str
    spawn_id: str
    started: datetime | None
    last_activity: datetime | None
    recorded: bool = True  # its `servers` row holds this spawn (False: it has none, or one of another spawn)
    backend: str = ""  # the backend running it: its stop goes to that backend's workers

    @property
    def key(self) -> ServerKey:
        """Which server it is."""
        return ServerKey(self.user, self.server_name)

    def idle_since(self) -> datetime | None:
        """The newest of its start and its last activity."""
        stamps = [t for t in (self.started, self.last_activity) if t is not None]
        return max(stamps) if stamps else None


def merge_activity(server: RunningServer, seen: datetime | None) -> RunningServer:
    """`server` with `seen` (activity observed on the bus) taken into account."""
    if seen is None or (server.last_activity is not None and server.last_activity >= seen):
        return server
    return replace(server, last_activity=seen)


def idle_servers(servers: list[RunningServer], now: datetime, timeout: float) -> list[RunningServer]:
    """The servers whose idle time is at least `timeout` seconds."""
    limit = now - timedelta(seconds=timeout)
    out = []
    for server in servers:
        since = server.idle_since()
        if since is not None and since <= limit:
            out.append(server)
    return out


async def running_servers(session: AsyncSession) -> list[RunningServer]:
    """Every running server with its recorded last activity, in one query (a server with no `servers` row too)."""
    rows = await session.execute(
        select(
            ServerState.user_name,
            ServerState.server_name,
            ServerState.spawn_id,
            ServerState.started,
            Server.last_activity,
            func.coalesce(Server.spawn_id == ServerState.spawn_id, False),
            ServerState.backend,
        )
        .select_from(ServerState)
        .join(User, User.name == ServerState.user_name, isouter=True)
        .join(Server, (Server.user_id == User.id) & (Server.name == ServerState.server_name), isouter=True)
        .where(ServerState.status == ServerStatus.RUNNING)
    )
    return [RunningServer(*row) for row in rows.all()]
