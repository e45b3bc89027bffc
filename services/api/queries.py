"""Reads shared by the api routes: users with their servers in two queries, never one per user."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Server, ServerState, User
from shared.errors import NotFound

from services.api.models import ServerView


async def get_user(session: AsyncSession, name: str) -> User:
    """The user `name`.

    Raises:
        NotFound: no such user.
    """
    user = (await session.execute(select(User).where(User.name == name))).scalar()
    if user is None:
        raise NotFound(f"No such user: {name}")
    return user


async def server_views(session: AsyncSession, users: list[User]) -> dict[int, list[ServerView]]:
    """The servers of `users`, each joined with its actual state; one query."""
    if not users:
        return {}
    by_name = {u.name: u.id for u in users}
    rows = await session.execute(
        select(Server, ServerState, User.name)
        .join(User, User.id == Server.user_id)
        .outerjoin(ServerState, and_(ServerState.user_name == User.name, ServerState.server_name == Server.name))
        .where(Server.user_id.in_([u.id for u in users]))
        .order_by(Server.id)
    )
    out: dict[int, list[ServerView]] = defaultdict(list)
    for server, state, uname in rows.all():
        out[by_name[uname]].append(ServerView(server, state))
    return out


async def one_server_view(session: AsyncSession, user: User, server_name: str, *, lock: bool = False) -> ServerView | None:
    """One server of `user` with its actual state (optionally locking the desired-state row)."""
    stmt = select(Server).where(Server.user_id == user.id, Server.name == server_name)
    if lock:
        stmt = stmt.with_for_update()
    server = (await session.execute(stmt)).scalar()
    if server is None:
        return None
    state = (await session.execute(
        select(ServerState).where(ServerState.user_name == user.name, ServerState.server_name == server_name)
    )).scalar()
    return ServerView(server, state)
