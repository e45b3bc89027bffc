"""Creating and deleting users."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Server, User
from shared.errors import BadRequest, Conflict
from shared.events import UserCreated, UserDeleted
from shared.names import normalize_username
from shared.outbox import enqueue
from shared.settings import ServiceSettings

from services.api.servers import stop_server


async def create_users(session: AsyncSession, settings: ServiceSettings, names: list[str], admin: bool) -> list[User]:
    """Create the users that do not exist yet; returns the created ones (in request order).

    Raises:
        BadRequest: a name is invalid.
        Conflict: every user exists already.
    """
    wanted: list[str] = []
    for raw in names:
        if not isinstance(raw, str):
            raise BadRequest("usernames must be strings")
        name = normalize_username(raw)
        if name not in wanted:
            wanted.append(name)
    if not wanted:
        raise BadRequest("Must specify at least one user to create")
    created = (await session.execute(
        insert(User).values([{"name": n, "admin": admin} for n in wanted])
        .on_conflict_do_nothing(index_elements=["name"]).returning(User)
    )).scalars().all()
    if not created:
        raise Conflict(f"All {len(wanted)} users already exist")
    for user in created:
        enqueue(session, UserCreated(name=user.name, admin=user.admin), settings.nats_namespace)
    order = {n: i for i, n in enumerate(wanted)}
    return sorted(created, key=lambda u: order[u.name])


async def delete_user(session: AsyncSession, settings: ServiceSettings, user: User) -> None:
    """Stop the user's servers (commands go out with the deletion) and delete the user."""
    names = (await session.execute(select(Server.name).where(Server.user_id == user.id))).scalars().all()
    for name in names:
        await stop_server(session, settings, user, name, reason="user-deleted")
    await session.execute(delete(User).where(User.id == user.id))
    enqueue(session, UserDeleted(name=user.name), settings.nats_namespace)
