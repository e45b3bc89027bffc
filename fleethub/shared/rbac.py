"""Roles and the scopes principals hold through them, their groups and shares."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import Group, GroupMember, GroupRole, Role, ServiceRole, Share, User, UserRole
from fleethub.shared.events import AccessChanged
from fleethub.shared.identity import Identity
from fleethub.shared.outbox import enqueue
from fleethub.shared.scopes import CustomSubscopes, Scope, expand, owner_scopes, parse_held, token_scopes


def access_changed(session: AsyncSession, namespace: str, *, users: Iterable[str] = (),
                   services: Iterable[str] = (), everyone: bool = False) -> None:
    """Announce (with the transaction that changes them) that these principals' scopes may have changed;
    every api replica then forgets their cached scopes."""
    enqueue(session, AccessChanged(users=sorted(set(users)), services=sorted(set(services)), everyone=everyone),
            namespace, origin="api")  # the api alone announces access changes (bus permissions)


# ---------------------------------------------------------------------------------------------
# the scopes a principal holds


@dataclass(frozen=True)
class Principal:
    """Who owns credentials: a user or a service (`id` is the row id of its own table)."""

    kind: str  # "user" | "service"
    id: int
    name: str
    admin: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.name


def principal_of(ident: Identity) -> Principal:
    """The principal behind an identity."""
    return Principal(ident.kind, ident.user_id, ident.name, ident.admin)


async def _role_scopes(session: AsyncSession, p: Principal) -> list[str]:
    if p.kind == "service":
        stmt = (select(Role.scopes).join(ServiceRole, ServiceRole.role_id == Role.id)
                .where(ServiceRole.service_id == p.id))
        return [s for row in (await session.execute(stmt)).scalars() for s in row or ()]
    mine = select(UserRole.role_id).where(UserRole.user_id == p.id)
    via_groups = (select(GroupRole.role_id).join(GroupMember, GroupMember.group_id == GroupRole.group_id)
                  .where(GroupMember.user_id == p.id))
    shares = (select(Share.scopes).where(or_(
        Share.user_id == p.id,
        Share.group_id.in_(select(GroupMember.group_id).where(GroupMember.user_id == p.id)))))
    both = select(Role.scopes).where(Role.id.in_(mine.union(via_groups))).union_all(shares)
    return [s for row in (await session.execute(both)).scalars() for s in row or ()]


async def _members(session: AsyncSession, groups: set[str]) -> dict[str, list[str]]:
    if not groups:
        return {}
    rows = await session.execute(
        select(Group.name, User.name).join(GroupMember, GroupMember.group_id == Group.id)
        .join(User, User.id == GroupMember.user_id).where(Group.name.in_(sorted(groups)))
    )
    out: dict[str, list[str]] = {g: [] for g in groups}
    for group, user in rows.all():
        out[group].append(user)
    return out


def _with_members(scopes: set[Scope], members: dict[str, list[str]]) -> frozenset[Scope]:
    """`scopes` plus a `user=` copy of each `group=` scope for every member of the group."""
    extra = {Scope(s.name, "user", m) for s in scopes if s.kind == "group" for m in members.get(s.value or "", ())}
    return frozenset(expand(scopes | extra))


class ScopeCache:
    """Per-process cache of each principal's effective scopes, and of its tokens' (intersections).

    An entry lives `ttl` seconds; `access.changed`, `user.updated`, `user.deleted` and `token.revoked`
    events drop entries at once on every replica, and a bus reconnect drops everything (events may
    have been missed while disconnected), so the TTL only bounds staleness if an event is lost.
    """

    def __init__(self, ttl: float = 30.0, max_principals: int = 20_000) -> None:
        self.ttl = ttl
        self.max_principals = max_principals
        self._entries: dict[tuple[str, str], tuple[float, dict[object, frozenset[Scope]]]] = {}

    def get(self, key: tuple[str, str], which: object) -> frozenset[Scope] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1].get(which)

    def put(self, key: tuple[str, str], which: object, scopes: frozenset[Scope]) -> None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            if len(self._entries) >= self.max_principals:
                self._entries.clear()
            entry = (time.monotonic() + self.ttl, {})
            self._entries[key] = entry
        entry[1][which] = scopes

    def drop(self, kind: str, names: Iterable[str]) -> None:
        for name in names:
            self._entries.pop((kind, name), None)

    def clear(self) -> None:
        self._entries.clear()


def _cache_slot(ident: Identity) -> object:
    return "cookie" if ident.via == "cookie" else ("token", ident.token_id)


def cached_scopes(cache: ScopeCache, ident: Identity) -> frozenset[Scope] | None:
    """`effective_scopes` of `ident` if `cache` holds them (no I/O), else None."""
    return cache.get(principal_of(ident).key, _cache_slot(ident))


async def effective_scopes(session: AsyncSession, ident: Identity, cache: ScopeCache | None = None,
                           custom: CustomSubscopes | None = None) -> frozenset[Scope]:
    """What `ident`'s request may do: its owner's scopes for a cookie, else the token's within them.

    The owner's scopes come from the default roles (`user`, and `admin` for admins), its custom roles
    and its groups' roles, and (users) the servers shared with it or its groups. Filters on a group
    also cover the group's members. A token holds its own scopes intersected with its owner's current
    ones (`inherit`: all of them), so an owner losing a scope takes it from every token at once.
    """
    p = principal_of(ident)
    which = _cache_slot(ident)
    if cache is not None:
        hit = cache.get(p.key, which)
        if hit is not None:
            return hit
    owner = cache.get(p.key, "owner") if cache is not None else None
    user, service = (p.name, None) if p.kind == "user" else (None, p.name)
    if owner is None:
        held = expand(owner_scopes(user, p.admin) | set(parse_held(await _role_scopes(session, p), user, service)),
                      custom)
        owner = _with_members(held, await _members(session, {s.value or "" for s in held if s.kind == "group"}))
        if cache is not None:
            cache.put(p.key, "owner", owner)
    if which == "cookie":
        result = owner
    else:
        # a token's `group=` scopes survive the intersection as such; their members are added after
        mine = token_scopes(ident.token_scopes, owner, user, service, custom)
        result = _with_members(mine, await _members(session, {s.value or "" for s in mine if s.kind == "group"}))
    if cache is not None:
        cache.put(p.key, which, result)
    return result
