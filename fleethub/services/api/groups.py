"""Groups: their bodies, names and model, and the reads and writes behind `/hub/api/groups`.

Members inherit a group's roles and shares, so every change of membership announces, in its own
transaction, which users' scopes may have changed (`access_changed`) and what changed (`GroupChanged`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import delete, func, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import Group, GroupMember, GroupRole, Role, User
from fleethub.shared.errors import BadRequest, Conflict, NotFound
from fleethub.shared.events import GroupChanged
from fleethub.shared.names import normalize_username, storable
from fleethub.shared.outbox import enqueue
from fleethub.shared.rbac import access_changed

MAX_NAMES = 10_000
MAX_MEMBERSHIPS = 1_000_000


class _Body(BaseModel):
    # JupyterHub refuses keys outside its group model (400), and accepts but ignores `name` and `roles`
    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = None
    roles: list[StrictStr] | None = Field(None, max_length=MAX_NAMES)


class GroupsCreate(_Body):
    """`POST /groups`: the groups to create, each with the same initial members."""

    groups: list[StrictStr] = Field(min_length=1, max_length=MAX_NAMES)
    users: list[StrictStr] = Field(default_factory=list, max_length=MAX_NAMES)


class GroupCreate(_Body):
    """`POST /groups/{name}`: optional initial members."""

    users: list[StrictStr] = Field(default_factory=list, max_length=MAX_NAMES)


class GroupUsers(_Body):
    """`POST|DELETE /groups/{name}/users`: the users to add or remove (required)."""

    users: list[StrictStr] | None = Field(None, max_length=MAX_NAMES)


# which fields of the Group model each scope reveals (JupyterHub's `group_model` access map)
GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "read:groups": ("kind", "name", "users", "properties"),
    "read:groups:name": ("kind", "name"),
    "read:roles:groups": ("kind", "name", "roles"),
}
READ_GROUP_SCOPES = tuple(GROUP_FIELDS)


@dataclass(frozen=True)
class GroupView:
    """A group with its members' and roles' names."""

    group: Group
    users: list[str]
    roles: list[str]


def group_model(view: GroupView, can: Callable[[str], bool]) -> dict[str, Any] | None:
    """The Group model as far as `can(scope)` lets the requester see it; None if nothing is visible."""
    fields = {f for scope, names in GROUP_FIELDS.items() if can(scope) for f in names}
    if not fields:
        return None
    full: dict[str, Any] = {"kind": "group", "name": view.group.name, "users": view.users,
                            "properties": view.group.properties or {}, "roles": view.roles}
    return {k: v for k, v in full.items() if k in fields}


def check_group_name(name: str) -> str:
    """`name` if it can name a group.

    Raises:
        BadRequest: empty, longer than 255 characters, or containing `/` or control characters.
    """
    if (not name or len(name) > 255 or "/" in name or not storable(name)
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)):
        raise BadRequest(f"invalid group name {name[:64]!r}: 1-255 characters, no '/' or control characters")
    return name


def check_properties(data: Any) -> dict[str, Any]:
    """A group's new properties: a JSON object that PostgreSQL can store.

    Raises:
        BadRequest: not an object, or holding NUL characters, lone surrogates or non-finite numbers.
    """
    if not isinstance(data, dict):
        raise BadRequest("Must specify properties as a JSON object")
    todo: list[Any] = [data]
    while todo:  # iterative: the nesting is as deep as the JSON parser allowed
        item = todo.pop()
        if isinstance(item, dict):
            if not all(storable(k) for k in item):
                raise BadRequest("properties: keys must not contain NUL characters or lone surrogates")
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str) and not storable(item):
            raise BadRequest("properties: strings must not contain NUL characters or lone surrogates")
        elif isinstance(item, float) and not math.isfinite(item):
            raise BadRequest("properties: numbers must be finite")
    return data


async def _users_named(session: AsyncSession, raw_names: Iterable[str]) -> dict[str, int]:
    """The ids of the named users (normalized, in request order), locked against deletion until commit.

    Raises:
        BadRequest: an invalid name, or no such user.
    """
    names: dict[str, None] = {}  # ordered, without duplicates
    for raw in raw_names:
        name = normalize_username(raw)
        if not storable(name):
            raise BadRequest(f"No such user: {name[:64]!r}")
        names[name] = None
    if not names:
        return {}
    rows = await session.execute(select(User.name, User.id).where(User.name.in_(list(names)))
                                 .with_for_update(key_share=True))
    found: dict[str, int] = {n: i for n, i in rows}
    for name in names:
        if name not in found:
            raise BadRequest(f"No such user: {name}")
    return {n: found[n] for n in names}


async def get_group(session: AsyncSession, name: str, *, lock: bool = False) -> Group:
    """The group `name`; `lock`: keep it from being deleted (and its members from changing under a
    deletion) until commit.

    Raises:
        NotFound: no such group.
    """
    query = select(Group).where(Group.name == name)
    if lock:
        query = query.with_for_update(key_share=True)
    group = (await session.execute(query)).scalar()
    if group is None:
        raise NotFound(f"No such group: {name}")
    return group


async def group_views(session: AsyncSession, groups: list[Group]) -> list[GroupView]:
    """`groups` with their members and roles: two queries, whatever the number of groups."""
    if not groups:
        return []
    ids = [g.id for g in groups]
    users: dict[int, list[str]] = defaultdict(list)
    rows = await session.execute(select(GroupMember.group_id, User.name).join(User, User.id == GroupMember.user_id)
                                 .where(GroupMember.group_id.in_(ids)).order_by(User.name))
    for gid, uname in rows:
        users[gid].append(uname)
    roles: dict[int, list[str]] = defaultdict(list)
    rows = await session.execute(select(GroupRole.group_id, Role.name).join(Role, Role.id == GroupRole.role_id)
                                 .where(GroupRole.group_id.in_(ids)).order_by(Role.name))
    for gid, rname in rows:
        roles[gid].append(rname)
    return [GroupView(g, users[g.id], roles[g.id]) for g in groups]


async def list_groups(session: AsyncSession, visible: frozenset[str] | None, offset: int,
                      limit: int) -> tuple[list[GroupView], int]:
    """One page of groups by id (only those named in `visible`, unless None), and the total."""
    where = [Group.name.in_(visible)] if visible is not None else []
    total = (await session.execute(select(func.count()).select_from(Group).where(*where))).scalar_one()
    groups = list((await session.execute(
        select(Group).where(*where).order_by(Group.id).offset(offset).limit(limit))).scalars())
    return await group_views(session, groups), total


def _announce(session: AsyncSession, namespace: str, group: str, change: str, users: list[str]) -> None:
    if users:
        access_changed(session, namespace, users=users)
    enqueue(session, GroupChanged(name=group, change=change, users=sorted(users)), namespace, origin="api")


async def create_groups(session: AsyncSession, namespace: str, names: list[str],
                        usernames: list[str]) -> list[GroupView]:
    """Create every group of `names` (duplicates once), each with the members `usernames`.

    Raises:
        BadRequest: an invalid group name, no group named, or an unknown user.
        Conflict: a group exists already (checked first, as JupyterHub does; then none is created).
    """
    wanted = list(dict.fromkeys(check_group_name(n) for n in names))
    if not wanted:
        raise BadRequest("Must specify at least one group to create")
    created = list((await session.execute(
        insert(Group).values([{"name": n} for n in wanted])
        .on_conflict_do_nothing(index_elements=["name"]).returning(Group)
    )).scalars())
    if len(created) < len(wanted):
        made = {g.name for g in created}
        taken = next(n for n in wanted if n not in made)
        raise Conflict(f"Group {taken} already exists")
    users = await _users_named(session, usernames)  # a BadRequest rolls the new groups back
    if len(created) * len(users) > MAX_MEMBERSHIPS:
        raise BadRequest(f"At most {MAX_MEMBERSHIPS} memberships can be created in one request")
    if users:
        # a cross join in the database: one bound parameter per group and per user, not per membership
        pairs = (select(Group.id, User.id).join(User, true())
                 .where(Group.id.in_([g.id for g in created]), User.id.in_(list(users.values()))))
        await session.execute(insert(GroupMember).from_select(["group_id", "user_id"], pairs)
                              .on_conflict_do_nothing())
    members = sorted(users)
    if members:
        access_changed(session, namespace, users=members)
    for g in created:
        enqueue(session, GroupChanged(name=g.name, change="created", users=members), namespace, origin="api")
    order = {n: i for i, n in enumerate(wanted)}
    return [GroupView(g, members, []) for g in sorted(created, key=lambda g: order[g.name])]


async def delete_group(session: AsyncSession, namespace: str, name: str) -> None:
    """Delete the group; its members lose what they held through it.

    Raises:
        NotFound: no such group.
    """
    group = (await session.execute(select(Group).where(Group.name == name).with_for_update())).scalar()
    if group is None:
        raise NotFound(f"No such group: {name}")
    members = list((await session.execute(
        select(User.name).join(GroupMember, GroupMember.user_id == User.id).where(GroupMember.group_id == group.id)
    )).scalars())
    await session.execute(delete(Group).where(Group.id == group.id))
    _announce(session, namespace, name, "deleted", members)


async def add_members(session: AsyncSession, namespace: str, name: str, usernames: list[str]) -> GroupView:
    """Add users to the group (members already in it are left alone).

    Raises:
        NotFound: no such group.
        BadRequest: an unknown user.
    """
    group = await get_group(session, name, lock=True)
    users = await _users_named(session, usernames)
    added: list[str] = []
    if users:
        ids = set((await session.execute(
            insert(GroupMember).values([{"group_id": group.id, "user_id": uid} for uid in users.values()])
            .on_conflict_do_nothing().returning(GroupMember.user_id)
        )).scalars())
        added = [n for n, uid in users.items() if uid in ids]
    if added:
        _announce(session, namespace, name, "members", added)
    (view,) = await group_views(session, [group])
    return view


async def remove_members(session: AsyncSession, namespace: str, name: str, usernames: list[str]) -> GroupView:
    """Remove users from the group (users not in it are left alone).

    Raises:
        NotFound: no such group.
        BadRequest: an unknown user.
    """
    group = await get_group(session, name, lock=True)
    users = await _users_named(session, usernames)
    removed: list[str] = []
    if users:
        ids = set((await session.execute(
            delete(GroupMember).where(GroupMember.group_id == group.id, GroupMember.user_id.in_(list(users.values())))
            .returning(GroupMember.user_id)
        )).scalars())
        removed = [n for n, uid in users.items() if uid in ids]
    if removed:
        _announce(session, namespace, name, "members", removed)
    (view,) = await group_views(session, [group])
    return view


async def set_properties(session: AsyncSession, namespace: str, name: str, properties: dict[str, Any]) -> GroupView:
    """Replace the group's properties.

    Raises:
        NotFound: no such group.
    """
    group = (await session.execute(
        update(Group).where(Group.name == name).values(properties=properties).returning(Group)
        .execution_options(synchronize_session=False)
    )).scalar()
    if group is None:
        raise NotFound(f"No such group: {name}")
    enqueue(session, GroupChanged(name=name, change="properties"), namespace, origin="api")
    (view,) = await group_views(session, [group])
    return view
