"""Reads shared by the api routes: users with their servers in two queries, never one per user."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import (
    ARRAY,
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    and_,
    any_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from shared.db.models import Group, GroupMember, Role, Server, ServerState, User, UserRole
from shared.errors import NotFound
from shared.names import storable

from services.api.models import ServerView, UserLinks


def _ids(ids: Iterable[int]) -> BindParameter[list[int]]:
    """A list of ids as one array parameter (`= ANY(:ids)`): rendering `IN (...)` with a bind parameter per
    id cost more than the query for a page of 200 users."""
    return bindparam("ids", list(ids), type_=ARRAY(Integer))


async def get_user(session: AsyncSession, name: str) -> User:
    """The user `name`.

    Raises:
        NotFound: no such user.
    """
    # a name PostgreSQL cannot hold (a NUL from the path: /users/a%00b) is nobody's
    user = (await session.execute(select(User).where(User.name == name))).scalar() if storable(name) else None
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
        .where(Server.user_id == any_(_ids(u.id for u in users)))
        .order_by(Server.id)
    )
    out: dict[int, list[ServerView]] = defaultdict(list)
    for server, state, uname in rows.all():
        out[by_name[uname]].append(ServerView(server, state))
    return out


async def user_links(session: AsyncSession, users: list[User]) -> dict[int, UserLinks]:
    """Group and custom role names of `users`: one query whatever their number."""
    if not users:
        return {}
    ids = [u.id for u in users]
    groups: dict[int, list[str]] = defaultdict(list)
    roles: dict[int, list[str]] = defaultdict(list)
    in_groups = (select(literal("g").label("kind"), GroupMember.user_id, Group.name)
                 .join(Group, Group.id == GroupMember.group_id).where(GroupMember.user_id == any_(_ids(ids))))
    with_roles = (select(literal("r").label("kind"), UserRole.user_id, Role.name)
                  .join(Role, Role.id == UserRole.role_id).where(UserRole.user_id == any_(_ids(ids))))
    rows = await session.execute(in_groups.union_all(with_roles).order_by("kind", "name"))
    for kind, uid, name in rows.all():
        (groups if kind == "g" else roles)[uid].append(name)
    return {u.id: UserLinks(tuple(groups[u.id]), tuple(roles[u.id])) for u in users}


def _user_in_full_statement() -> Select[tuple[User, Server, ServerState, list[str], list[str]]]:
    groups = (select(func.array_agg(aggregate_order_by(Group.name, Group.name)))
              .join(GroupMember, GroupMember.group_id == Group.id).where(GroupMember.user_id == User.id)
              .scalar_subquery())
    roles = (select(func.array_agg(aggregate_order_by(Role.name, Role.name)))
             .join(UserRole, UserRole.role_id == Role.id).where(UserRole.user_id == User.id).scalar_subquery())
    return (select(User, Server, ServerState, groups, roles)
            .outerjoin(Server, Server.user_id == User.id)
            .outerjoin(ServerState, and_(ServerState.user_name == User.name, ServerState.server_name == Server.name))
            .where(User.name == bindparam("name")).order_by(Server.id))


# built once: composing this statement cost more CPU than running it (a third of the request)
_USER_IN_FULL = _user_in_full_statement()


async def user_in_full(session: AsyncSession, name: str) -> tuple[User, list[ServerView], UserLinks]:
    """The user `name` with its servers (each joined with its actual state), groups and roles, in one
    query: the read behind `GET /users/{name}` and `GET /user`.

    Raises:
        NotFound: no such user.
    """
    if not storable(name):  # a NUL from the path (/users/a%00b) names nobody
        raise NotFound(f"No such user: {name}")
    rows = (await session.execute(_USER_IN_FULL, {"name": name})).all()
    if not rows:
        raise NotFound(f"No such user: {name}")
    user, _, _, group_names, role_names = rows[0]
    views = [ServerView(server, state) for _, server, state, _, _ in rows if server is not None]
    return user, views, UserLinks(tuple(group_names or ()), tuple(role_names or ()))


async def one_server_view(session: AsyncSession, user: User, server_name: str, *, lock: bool = False) -> ServerView | None:
    """One server of `user` with its actual state (optionally locking the desired-state row)."""
    if not storable(server_name):
        return None
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


USER_STATES = ("active", "ready", "inactive")
USER_SORTS = ("id", "name", "last_activity")


@dataclass(frozen=True)
class UserQuery:
    """The filters, order and page of `GET /users`."""

    names: frozenset[str] | None = None  # None: every user the requester may list
    state: str | None = None  # active | ready | inactive
    name_filter: str | None = None  # case-insensitive substring
    sort: str = "id"  # id | name | last_activity, "-" prefix for descending
    offset: int = 0
    limit: int = 200


def _state_clause(state: str) -> ColumnElement[bool]:
    st = aliased(ServerState)
    srv = aliased(Server)
    base = (
        select(srv.id)
        .outerjoin(st, and_(st.user_name == User.name, st.server_name == srv.name))
        .where(srv.user_id == User.id)
    )
    if state == "ready":
        return exists(base.where(st.status == "running", st.spawn_id == srv.spawn_id, srv.desired == "running"))
    # active as ServerView.status has it: a spawner-side transition, or a request no worker took yet
    requested = and_(srv.desired == "running", srv.spawn_id.is_not(None),
                     or_(st.spawn_id.is_(None), st.spawn_id != srv.spawn_id))
    active = exists(base.where(or_(st.status.in_(("pending", "running", "stopping")), requested)))
    return active if state == "active" else ~active


async def list_users(session: AsyncSession, query: UserQuery) -> tuple[list[User], int]:
    """One page of users and the total number matching (two queries)."""
    stmt = select(User)
    if query.names is not None:
        stmt = stmt.where(User.name.in_(sorted(query.names)))
    if query.state is not None:
        stmt = stmt.where(_state_clause(query.state))
    if query.name_filter and not storable(query.name_filter):
        return [], 0  # no name holds a NUL character or a lone surrogate
    if query.name_filter:
        stmt = stmt.where(func.lower(User.name).contains(query.name_filter.lower(), autoescape=True))
    total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    key = query.sort.lstrip("-")
    column = {"id": User.id, "name": User.name, "last_activity": User.last_activity}[key]
    order = column.desc().nulls_last() if query.sort.startswith("-") else column.asc().nulls_first()
    page = stmt.order_by(order, User.id).offset(query.offset).limit(query.limit)
    return list((await session.execute(page)).scalars()), int(total)
