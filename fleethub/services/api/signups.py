"""Rejecting a sign-up: its account goes, and its user row too unless something else was made for it."""

from __future__ import annotations

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.users import delete_user
from fleethub.shared.db.models import Account, ApiToken, GroupMember, Server, User, UserRole
from fleethub.shared.lifecycle import Announcer
from fleethub.shared.settings import ServiceSettings


async def _has_more(session: AsyncSession, user: User) -> bool:
    """Whether the user is more than a sign-up: an admin, or holding servers, tokens, groups or roles."""
    if user.admin:
        return True
    held = or_(*(exists().where(column == user.id) for column in (
        Server.user_id, ApiToken.user_id, GroupMember.user_id, UserRole.user_id)))
    return bool((await session.execute(select(held))).scalar())


async def reject_signup(session: AsyncSession, settings: ServiceSettings, user: User, *,
                        announcer: Announcer) -> bool:
    """Delete the pending account of `user`, and the user with it if it has nothing else; returns whether the
    user was deleted."""
    if await _has_more(session, user):
        await session.execute(delete(Account).where(Account.user_id == user.id))
        return False
    await delete_user(session, settings, user, announcer=announcer)  # the account goes with the row
    return True
