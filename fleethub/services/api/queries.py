"""Reads shared by the api routes: users in full (servers, groups, roles) in one query, never one per user."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    BindParameter,
    ColumnElement,
    FromClause,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from fleethub.services.api.models import AnyView, ServerView, UserLinks
from fleethub.shared.db.models import Group, GroupMember, Role, Server, ServerState, User, UserRole
from fleethub.shared.errors import NotFound
from fleethub.shared.lifecycle import ACTIVE, DesiredState, ServerStatus
from fleethub.shared.names import storable


def _ids(ids: Iterable[int]) -> BindParameter[Sequence[int]]:
    """A list of ids as one array parameter (`= ANY(:ids)`): rendering `IN (...)` with a bind parameter per
    id cost more than the query for a page of 200 users."""
    values: Sequence[int] = list(ids)
    return bindparam("ids", values, type_=ARRAY(Integer))


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


async def server_views(session: AsyncSession, users: list[User]) -> dict[int, list[AnyView]]:
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
    out: dict[int, list[AnyView]] = defaultdict(list)
    for server, state, uname in rows.all():
        out[by_name[uname]].append(ServerView(server, state))
    return out


class UserRow(NamedTuple):
    """The user columns of the User model (read without the ORM)."""

    name: str
    admin: bool
    created: datetime | None
    last_activity: datetime | None
    auth_state: dict[str, Any] | None


class ServerRow(NamedTuple):
    """The desired-state columns of the Server model."""

    name: str
    display_name: str | None
    desired: str
    spawn_id: str | None
    user_options: dict[str, Any] | None
    last_activity: datetime | None


class StateRow(NamedTuple):
    """The actual-state columns of the Server model."""

    spawn_id: str | None
    status: str
    started: datetime | None
    state: dict[str, Any] | None


def _in_full(users: Any, source: FromClause) -> Select[Any]:
    """The rows of users in full, one per server (or one without servers): the user columns of `users`
    (the users table's columns, or a subquery's with the same names) from `source`, their groups' and
    custom roles' names, and each server joined with its actual state; columns, not ORM entities (loading
    entities cost more than the query), in the order of the row types."""
    groups = (select(func.array_agg(aggregate_order_by(Group.name, Group.name)))
              .join(GroupMember, GroupMember.group_id == Group.id).where(GroupMember.user_id == users.id)
              .scalar_subquery())
    roles = (select(func.array_agg(aggregate_order_by(Role.name, Role.name)))
             .join(UserRole, UserRole.role_id == Role.id).where(UserRole.user_id == users.id).scalar_subquery())
    return (select(users.name, users.admin, users.created, users.last_activity, users.auth_state, groups, roles,
                   Server.name, Server.display_name, Server.desired, Server.spawn_id, Server.user_options,
                   Server.last_activity,
                   ServerState.spawn_id, ServerState.status, ServerState.started, ServerState.state)
            .select_from(source)
            .outerjoin(Server, Server.user_id == users.id)
            .outerjoin(ServerState, and_(ServerState.user_name == users.name, ServerState.server_name == Server.name)))


def _user_in_full_statement() -> Select[Any]:
    users = User.__table__
    return _in_full(users.c, users).where(users.c.name == bindparam("name")).order_by(Server.id)


# built once: composing this statement cost more CPU than running it (a third of the request)
USER_IN_FULL = _user_in_full_statement()


UserInFull = tuple[UserRow, list[AnyView], UserLinks]


def user_from_rows(rows: Sequence[Sequence[Any]]) -> UserInFull:
    """One user's rows of `USER_IN_FULL` or of a page (at least one) as the user, its servers and its links."""
    first = rows[0]
    views: list[AnyView] = [ServerView(ServerRow(*r[7:13]), StateRow(*r[13:17]) if r[14] is not None else None)
                            for r in rows if r[7] is not None]
    return UserRow(*first[:5]), views, UserLinks(tuple(first[5] or ()), tuple(first[6] or ()))


async def user_in_full(session: AsyncSession, name: str) -> UserInFull:
    """The user `name` with its servers (each joined with its actual state), groups and roles, in one
    query: the read behind `GET /users/{name}` and `GET /user`.

    Raises:
        NotFound: no such user.
    """
    if not storable(name):  # a NUL from the path (/users/a%00b) names nobody
        raise NotFound(f"No such user: {name}")
    rows = (await session.execute(USER_IN_FULL, {"name": name})).all()
    if not rows:
        raise NotFound(f"No such user: {name}")
    return user_from_rows(rows)


async def one_server_view(session: AsyncSession, user: User, server_name: str, *,
                          lock: bool = False) -> ServerView[Server, ServerState] | None:
    """One server of `user` with its actual state (optionally locking the desired-state row)."""
    if not storable(server_name):
        return None
    stmt = select(Server).where(Server.user_id == user.id, Server.name == server_name)
    if lock:  # as it is now, though read before in this session: the change is conditioned on what it says
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
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
        return exists(base.where(st.status == ServerStatus.RUNNING, st.spawn_id == srv.spawn_id,
                                 srv.desired == DesiredState.RUNNING))
    # active as ServerView.status has it: a spawner-side transition, or a request no worker took yet
    requested = and_(srv.desired == DesiredState.RUNNING, srv.spawn_id.is_not(None),
                     or_(st.spawn_id.is_(None), st.spawn_id != srv.spawn_id))
    active = exists(base.where(or_(st.status.in_(sorted(ACTIVE)), requested)))
    return active if state == "active" else ~active


def _like_pattern(text: str) -> str:
    """A LIKE pattern matching names that contain `text` (escape character `/`)."""
    return "%" + text.lower().replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


@functools.lru_cache(maxsize=128)
def _page_statements(by_names: bool, state: str | None, by_substring: bool,
                     sort: str) -> tuple[Select[Any], Select[Any]]:
    """The page statement (users in full, each row with the total) and the count statement of one shape of
    `GET /users`; values are bound (`names`, `pattern`, `offset`, `limit`). Built once per shape: composing
    them cost more of a page's CPU than reading the rows."""
    users = User.__table__.c
    matching = select(users.id).select_from(User.__table__)
    if by_names:
        matching = matching.where(users.name == any_(bindparam("names", type_=ARRAY(String))))
    if state is not None:
        matching = matching.where(_state_clause(state))
    if by_substring:
        matching = matching.where(func.lower(users.name).like(bindparam("pattern"), escape="/"))

    def order(cols: Any) -> tuple[Any, ...]:
        # each order is an index read forwards or backwards (ties by id, reversed too), so a page needs no sort:
        # id and name are NOT NULL and unique; last_activity's index is (last_activity NULLS FIRST, id)
        column = {"id": cols.id, "name": cols.name, "last_activity": cols.last_activity}[sort.lstrip("-")]
        if sort.startswith("-"):
            return (column.desc().nulls_last() if column is cols.last_activity else column.desc(), cols.id.desc())
        return (column.asc().nulls_first() if column is cols.last_activity else column.asc(), cols.id.asc())

    # the total rides on every row as an uncorrelated subquery (computed once); a window count over the
    # page query instead made PostgreSQL materialise and sort every matching row for each page
    total = select(func.count()).select_from(matching.subquery()).scalar_subquery()
    page = (matching.add_columns(users.name, users.admin, users.created, users.last_activity, users.auth_state,
                                 total.label("total"))
            .order_by(*order(users)).offset(bindparam("offset")).limit(bindparam("limit")).subquery("page"))
    stmt = _in_full(page.c, page).add_columns(page.c.id, page.c.total).order_by(*order(page.c), Server.id)
    return stmt, select(total)


async def list_users(session: AsyncSession, query: UserQuery) -> tuple[list[UserInFull], int]:
    """One page of users in full and the total number matching, in one query (a second one only for the
    total of a page past the end)."""
    if query.name_filter and not storable(query.name_filter):
        return [], 0  # no name holds a NUL character or a lone surrogate
    stmt, count = _page_statements(query.names is not None, query.state, bool(query.name_filter), query.sort)
    params: dict[str, Any] = {"offset": query.offset, "limit": query.limit}
    if query.names is not None:
        params["names"] = sorted(query.names)
    if query.name_filter:
        params["pattern"] = _like_pattern(query.name_filter)
    rows = (await session.execute(stmt, params)).all()
    if not rows:
        return [], 0 if query.offset == 0 else int((await session.execute(count, params)).scalar_one())
    return [user_from_rows(list(mine)) for _, mine in groupby(rows, key=lambda r: r[17])], int(rows[0][18])
