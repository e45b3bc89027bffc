"""Roles and the scopes principals hold through them, their groups and shares."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Group, GroupMember, GroupRole, Role, ServiceRole, Share, User, UserRole
from shared.events import AccessChanged
from shared.identity import Identity
from shared.outbox import enqueue
from shared.scopes import ADMIN_ROLE, SELF, Scope, ScopeError, expand, intersect, parse


def access_changed(session: AsyncSession, namespace: str, *, users: Iterable[str] = (),
                   services: Iterable[str] = (), everyone: bool = False) -> None:
    """Announce (with the transaction that changes them) that these principals' scopes may have changed;
    every api replica then forgets their cached scopes."""
    enqueue(session, AccessChanged(users=sorted(set(users)), services=sorted(set(services)), everyone=everyone),
            namespace)


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
    stmt = select(Role.scopes).where(Role.id.in_(mine.union(via_groups))).union_all(shares)
    return [s for row in (await session.execute(stmt)).scalars() for s in row or ()]


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


def _parse_all(texts: Iterable[str], p: Principal) -> list[Scope]:
    parsed: list[Scope] = []
    for text in texts:
        if text in ("inherit", "identify"):
            continue
        if text == "self":
            parsed += [Scope(s, "user", p.name) for s in SELF] if p.kind == "user" else []
            continue
        try:
            parsed.append(parse(text, owner=p.name if p.kind == "user" else None,
                                service=p.name if p.kind == "service" else None))
        except ScopeError:
            continue  # a scope this hub does not know (e.g. a custom one) grants nothing here
    return parsed


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


async def effective_scopes(session: AsyncSession, ident: Identity, cache: ScopeCache | None = None) -> frozenset[Scope]:
    """What `ident`'s request may do: its owner's scopes for a cookie, else the token's within them.

    The owner's scopes come from the default roles (`user`, and `admin` for admins), its custom roles
    and its groups' roles, and (users) the servers shared with it or its groups. Filters on a group
    also cover the group's members. A token holds its own scopes intersected with its owner's current
    ones (`inherit`: all of them), so an owner losing a scope takes it from every token at once.
    """
    p = principal_of(ident)
    which: object = "cookie" if ident.via == "cookie" else ("token", ident.token_id)
    if cache is not None:
        hit = cache.get(p.key, which)
        if hit is not None:
            return hit
    owner = cache.get(p.key, "owner") if cache is not None else None
    token_parsed: list[Scope] = []
    if which != "cookie" and "inherit" not in ident.token_scopes:
        token_parsed = list(expand(_parse_all(ident.token_scopes, p)))
    if owner is None:
        base: list[Scope] = []
        if p.kind == "user":
            base = [Scope(s, "user", p.name) for s in SELF]
        if p.admin:
            base += [Scope(s) for s in ADMIN_ROLE]
        held = expand(base + _parse_all(await _role_scopes(session, p), p))
        groups = {s.value or "" for s in (*held, *token_parsed) if s.kind == "group"}
        members = await _members(session, groups)
        owner = _with_members(held, members)
        if cache is not None:
            cache.put(p.key, "owner", owner)
    else:
        members = await _members(session, {s.value or "" for s in token_parsed if s.kind == "group"})
    if which == "cookie" or "inherit" in ident.token_scopes:
        result = owner
    else:
        result = frozenset(intersect(_with_members(set(token_parsed), members), owner))
    if cache is not None:
        cache.put(p.key, which, result)
    return result
