"""What a successful authentication changes in the database: the user row (created, admin flag), its
auth_state (encrypted) and — with `auth.manage_groups` — its groups; and the post-auth hook.

Shared because three places apply an authenticator's answer: the auth service at login and in its refresh
loop, and the api when it refreshes a user before a spawn. Events about users, groups and access are
published by the api (the only service allowed to): rows written here go to the outbox with origin "api",
and the api's relay publishes them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.authenticators.base import Authenticator, AuthUser
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import ApiToken, Group, GroupMember, LoginSession, OAuthCode, User
from fleethub.shared.events import GroupChanged, TokenRevoked, UserCreated, UserLoggedOut, UserUpdated
from fleethub.shared.outbox import enqueue
from fleethub.shared.plugins import load_callable
from fleethub.shared.rbac import access_changed
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)
HOOK_GROUP = "fleethub.hooks"
POST_AUTH = "auth.post_auth_hook (FLEETHUB_AUTH__POST_AUTH_HOOK)"


class PostAuthHook:
    """`auth.post_auth_hook`, loaded once: `hook(authenticator, user)` → the user (changed or not) or None."""

    def __init__(self, settings: ServiceSettings) -> None:
        name = settings.auth.post_auth_hook
        self._hook = load_callable(HOOK_GROUP, name, POST_AUTH) if name else None

    async def __call__(self, authenticator: Authenticator, user: AuthUser) -> AuthUser | None:
        """The user as the hook leaves it; None if it refused (an exception refuses too, and is logged)."""
        if self._hook is None:
            return user
        try:
            if inspect.iscoroutinefunction(self._hook):
                result: Any = await self._hook(authenticator, user)
            else:
                result = await asyncio.to_thread(self._hook, authenticator, user)
        except Exception:
            log.exception("%s raised for user %r: login refused", POST_AUTH, user.name)
            return None
        if result is None:
            return None
        if not isinstance(result, AuthUser):
            log.error("%s returned %s, not an AuthUser or None: login refused", POST_AUTH, type(result).__name__)
            return None
        return result


async def user_exists(session: AsyncSession, name: str) -> bool:
    """Whether `name` is a hub user already."""
    return (await session.execute(select(User.id).where(User.name == name))).first() is not None


async def record_user(session: AsyncSession, settings: ServiceSettings, crypt: AuthStateCrypt, user: AuthUser,
                      admin: bool | None) -> int:
    """Create or update `user`'s row in `session`'s transaction: the admin flag (None: as it is), the
    auth_state (with `auth.enable_auth_state`, sealed with the first key), the groups (with
    `auth.manage_groups` and groups known), and `auth_refreshed` (now). Announces what changed; returns the
    user's id."""
    ns = settings.nats_namespace
    row = (await session.execute(
        select(User.id, User.admin).where(User.name == user.name).with_for_update()
    )).first()
    if row is None:
        user_id = (await session.execute(
            insert(User).values(name=user.name, admin=bool(admin))
            .on_conflict_do_update(index_elements=["name"], set_={"name": user.name})
            .returning(User.id)
        )).scalar_one()
        enqueue(session, UserCreated(name=user.name, admin=bool(admin)), ns, origin="api")
    else:
        user_id = int(row[0])
        if admin is not None and bool(row[1]) != admin:
            await session.execute(update(User).where(User.id == user_id).values(admin=admin))
            enqueue(session, UserUpdated(name=user.name, admin=admin), ns, origin="api")
            access_changed(session, ns, users=[user.name])
    changes: dict[str, Any] = {"auth_refreshed": func.now()}  # authenticated just now
    if settings.auth.enable_auth_state and user.auth_state is not None:
        changes["auth_state"] = crypt.seal(user.auth_state)
    await session.execute(update(User).where(User.id == user_id).values(**changes))
    if settings.auth.manage_groups and user.groups is not None:
        await sync_groups(session, settings, user_id, user.name, user.groups)
    return int(user_id)


def _group_name_ok(name: str) -> bool:
    return bool(name) and len(name) <= 255 and "/" not in name and "\x00" not in name and not any(
        ord(c) < 0x20 or ord(c) == 0x7F for c in name)


async def sync_groups(session: AsyncSession, settings: ServiceSettings, user_id: int, name: str,
                      groups: list[str]) -> None:
    """Make `groups` exactly the user's hub groups (creating missing ones); a name that cannot be a group
    is skipped with a warning."""
    ns = settings.nats_namespace
    wanted = []
    for g in dict.fromkeys(groups):
        if _group_name_ok(g):
            wanted.append(g)
        else:
            log.warning("group %r of user %r from the authenticator is not a valid group name: skipped", g[:64], name)
    if wanted:
        created = (await session.execute(
            insert(Group).values([{"name": g, "properties": {}} for g in wanted])
            .on_conflict_do_nothing(index_elements=["name"]).returning(Group.name)
        )).scalars().all()
        for g in created:
            enqueue(session, GroupChanged(name=g, change="created"), ns, origin="api")
    ids = {g: i for g, i in (await session.execute(select(Group.name, Group.id).where(Group.name.in_(wanted))))}
    current = {g: i for g, i in (await session.execute(
        select(Group.name, Group.id).join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == user_id)
    ))}
    add = [g for g in wanted if g not in current and g in ids]
    remove = [g for g in current if g not in ids]
    if add:
        await session.execute(insert(GroupMember).values([{"group_id": ids[g], "user_id": user_id} for g in add])
                              .on_conflict_do_nothing())
    if remove:
        await session.execute(delete(GroupMember).where(
            GroupMember.user_id == user_id, GroupMember.group_id.in_([current[g] for g in remove])))
    for g in add + remove:
        enqueue(session, GroupChanged(name=g, change="members", users=[name]), ns, origin="api")
    if add or remove:
        access_changed(session, ns, users=[name])


async def stored_user(session: AsyncSession, crypt: AuthStateCrypt, name: str) -> AuthUser | None:
    """The user `name` as stored (admin flag, groups, auth_state decrypted), in one query: for
    `refresh_user`, and for `pre_spawn_start` in a spawner worker (on a spawn's path)."""
    groups = (select(func.array_agg(Group.name)).join(GroupMember, GroupMember.group_id == Group.id)
              .where(GroupMember.user_id == User.id).scalar_subquery())
    row = (await session.execute(select(User.admin, User.auth_state, groups).where(User.name == name))).first()
    if row is None:
        return None
    return AuthUser(name, admin=bool(row[0]), groups=sorted(row[2] or ()), auth_state=crypt.open(row[1], name))


async def end_logins(session: AsyncSession, namespace: str, user_id: int, name: str, *, keep: str | None = None,
                     only: str | None = None) -> int:
    """End login sessions of user `user_id` (`name`) in `session`'s transaction: every one but `keep`, or
    only the session `only`; with them the tokens and OAuth codes issued to them (their servers' OAuth
    tokens, CVE-2021-41247). API tokens the user made stay. Announces the revoked tokens (every api
    replica forgets them at once) and the logout; returns how many sessions ended."""
    if only is not None:
        sids = [only]
    else:
        sids = list((await session.execute(
            delete(LoginSession).where(LoginSession.user_id == user_id, LoginSession.session_id != (keep or ""))
            .returning(LoginSession.session_id)
        )).scalars())
    if not sids:
        return 0
    tokens = (await session.execute(
        delete(ApiToken).where(ApiToken.user_id == user_id, ApiToken.session_id.in_(sids)).returning(ApiToken.id)
    )).scalars().all()
    await session.execute(delete(OAuthCode).where(OAuthCode.user_id == user_id, OAuthCode.session_id.in_(sids)))
    for token_id in tokens:
        enqueue(session, TokenRevoked(token_id=token_id, user=name), namespace, origin="api")
    enqueue(session, UserLoggedOut(name=name), namespace, origin="auth")
    return len(sids)

