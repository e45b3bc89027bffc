"""A user's servers: starting and stopping (desired state, the server's token and the command in one
transaction; the desired state and the command through `lifecycle.transition`), creating, renaming and
editing stopped ones, and the hub-wide spawn limits."""

from __future__ import annotations

import math
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.models import Pending, ServerView
from fleethub.services.api.queries import one_server_view
from fleethub.shared.backend_options import configure_for
from fleethub.shared.db.locks import AdvisoryLock, xact_lock
from fleethub.shared.db.models import ApiToken, GroupMember, Server, ServerState, Share, ShareCode, User
from fleethub.shared.errors import BadRequest, Conflict, NotFound, TooManyRequests
from fleethub.shared.events import TokenRevoked, new_id
from fleethub.shared.lifecycle import (
    ACTIVE,
    DONE,
    Announcer,
    DesiredState,
    Request,
    ServerKey,
    ServerStatus,
    transition,
)
from fleethub.shared.names import server_prefix, storable
from fleethub.shared.outbox import enqueue
from fleethub.shared.profiles import resolve
from fleethub.shared.rbac import access_changed
from fleethub.shared.security import hash_token, server_token
from fleethub.shared.settings import ServiceSettings

# JupyterHub 6 (slugs.is_valid_safe_slug) for new servers: 1-30 of [a-z0-9], single hyphens inside
SERVER_NAME_RE = re.compile(r"[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,29}")
# slugs.is_valid_display_name: printable, no whitespace but single inner spaces
_DISPLAY_CATEGORIES = frozenset({"LC", "Ll", "Lm", "Lo", "Lt", "Lu", "Mc", "Me", "Mn", "Nd", "Nl", "No", "Pc", "Pd",
                                 "Pe", "Pf", "Pi", "Po", "Ps", "Sc", "Sk", "Sm", "So"})
SPAWN_RETRY_RANGE = (30, 60)  # JupyterHub's spawn_throttle_retry_range
ACTIVE_RETRY_AFTER = 60


@dataclass(frozen=True)
class StartResult:
    """What a start request did: `started` (a new spawn) or `pending` (one already under way)."""

    spawn_id: str
    started: bool


@dataclass(frozen=True)
class ServerRequest:
    """The body of a create or start request (JupyterHub 6 `ServerRequest`)."""

    display_name: str | None = None
    user_options: dict[str, Any] | None = None  # None: keep the previous options


@dataclass(frozen=True)
class ServerPatch:
    """The body of `PATCH /users/{name}/servers/{server_name}`: only the fields given are changed."""

    name: str | None = None
    display_name: str | None = None
    user_options: dict[str, Any] | None = None


def label(user: str, server_name: str) -> str:
    """How messages name a server: "bob's server" or "bob's server gpu"."""
    return f"{user}'s server" + (f" {server_name}" if server_name else "")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("Body must be a JSON object")
    return body


def server_request_from(body: Any) -> ServerRequest:
    """A create/start body: `{"display_name", "user_options"}`, or (5.x clients) the options alone.

    Raises:
        BadRequest: not an object, or a field of the wrong type.
    """
    if body is None or body == {}:
        return ServerRequest()
    data = _object(body)
    display_name = data.get("display_name")
    if display_name is not None and not isinstance(display_name, str):
        raise BadRequest("display_name must be a string")
    if "display_name" not in data and "user_options" not in data:
        return ServerRequest(user_options=data)  # backward compatible: the whole body is the options
    options = data.get("user_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("user_options must be an object or null")
    return ServerRequest(display_name or None, options)


def server_patch_from(body: Any) -> ServerPatch:
    """A PATCH body: at least one of `name`, `display_name`, `user_options`, nothing else.

    Raises:
        BadRequest: empty, unknown fields, or a field of the wrong type.
    """
    data = _object(body if body is not None else {})
    if not data:
        raise BadRequest("Must specify at least one field to modify.")
    supported = ("name", "display_name", "user_options")
    unknown = sorted(set(data) - set(supported))
    if unknown:
        raise BadRequest(f"Unexpected fields: {', '.join(k[:40] for k in unknown[:10])}; "
                         f"supported fields: {', '.join(supported)}")
    for key in ("name", "display_name"):
        if key in data and not isinstance(data[key], str):
            raise BadRequest(f"{key} must be a string")
    if "user_options" in data and not isinstance(data["user_options"], dict):
        raise BadRequest("user_options must be a dict")
    return ServerPatch(data.get("name"), data.get("display_name"), data.get("user_options"))


def check_server_name(name: str) -> None:
    """New server names: 1-30 of [a-z0-9-], starting with a letter, no double or trailing hyphen."""
    if not SERVER_NAME_RE.fullmatch(name):
        raise BadRequest(
            f"Invalid server name {name[:64]!r}: "
            "1-30 lowercase letters, digits or single hyphens, starting with a letter"
        )


def check_display_name(name: str) -> str:
    """A display name (NFC-normalized): 1-255 printable characters, single spaces only between words."""
    name = unicodedata.normalize("NFC", name)
    ok = (0 < len(name) <= 255 and "  " not in name and not name.startswith(" ") and not name.endswith(" ")
          and all(c == " " or unicodedata.category(c) in _DISPLAY_CATEGORIES for c in name))
    if not ok:
        raise BadRequest(f"Invalid display_name: {name[:64]!r}")
    return name


async def lock_user(session: AsyncSession, name: str) -> User:
    """The user `name`, locked until commit: its servers are created or renamed one request at a time.

    Raises:
        NotFound: no such user.
    """
    stmt = select(User).where(User.name == name).with_for_update(key_share=True)  # FOR NO KEY UPDATE
    user = (await session.execute(stmt)).scalar() if storable(name) else None
    if user is None:
        raise NotFound(f"No such user: {name}")
    return user


async def count_named(session: AsyncSession, user: User) -> int:
    """How many named servers `user` has."""
    return (await session.execute(
        select(func.count()).select_from(Server).where(Server.user_id == user.id, Server.name != "")
    )).scalar_one()


async def check_named_server(session: AsyncSession, settings: ServiceSettings, user: User, server_name: str, *,
                             new: bool, check_limit: bool = True) -> None:
    """JupyterHub's checks of a request for a named server: enabled, a valid name and the per-user limit
    (both only for a server that does not exist yet; names from before these rules keep working).
    The caller holds `lock_user`, so two requests cannot both take the last place.

    Raises:
        BadRequest: named servers are off, the name is invalid, or the user has the maximum.
    """
    if not settings.api.allow_named_servers:
        raise BadRequest("Named servers are not enabled.")
    if not new:
        return
    check_server_name(server_name)
    limit = settings.api.named_server_limit_per_user
    if check_limit and limit and await count_named(session, user) >= limit:
        raise BadRequest(f"User {user.name} already has the maximum of {limit} named servers.  "
                         "One must be deleted before a new server can be created")


async def _count_servers(session: AsyncSession) -> tuple[int, int]:
    """(spawns pending, servers active) across the hub, as JupyterHub counts them.

    Pending: wanted running and not yet ready. Active: pending or running, and servers still
    stopping (they hold resources until they are gone).
    """
    st = ServerState
    wanted = (
        select(Server.id.label("id"), st.status.label("status"),
               func.coalesce(st.spawn_id == Server.spawn_id, False).label("current"))
        .join(User, User.id == Server.user_id)
        .outerjoin(st, and_(st.user_name == User.name, st.server_name == Server.name))
        .where(Server.desired == DesiredState.RUNNING, Server.spawn_id.is_not(None))
        .subquery()
    )
    unclaimed = ~wanted.c.current
    pending = select(func.count()).where(or_(unclaimed, wanted.c.status == ServerStatus.PENDING)).select_from(wanted)
    up = (ServerStatus.PENDING, ServerStatus.RUNNING)
    active = select(func.count()).where(or_(unclaimed, wanted.c.status.in_(up))).select_from(wanted)
    wanted_running = exists().where(Server.spawn_id == st.spawn_id, Server.desired == DesiredState.RUNNING)
    winding_down = select(func.count()).select_from(st).where(st.status.in_(sorted(ACTIVE)), ~wanted_running)
    row = (await session.execute(select(pending.scalar_subquery(), active.scalar_subquery(),
                                        winding_down.scalar_subquery()))).one()
    return int(row[0]), int(row[1]) + int(row[2])


def _human(seconds: int) -> str:
    # JupyterHub's rounding: up to the next 10 seconds, or whole minutes past 90 s
    return f"{math.ceil(seconds / 10)}0 seconds" if seconds <= 90 else f"{round(seconds / 60)} minutes"


async def check_limits(session: AsyncSession, settings: ServiceSettings, *, counted: int = 0,
                       locked: bool = True) -> None:
    """Hub-wide limits, counted in PostgreSQL so they hold across api replicas.

    The advisory lock is held until the start commits, so the next replica to count sees this spawn.
    `counted`: spawns the caller's transaction has already recorded (they are in the count, and are
    not to be refused for themselves). `locked=False` counts what is committed without the lock: a
    cheap early refusal (the limit was reached), never an admission.

    Raises:
        TooManyRequests: `concurrent_spawn_limit` or `active_server_limit` is reached.
    """
    api = settings.api
    if not api.concurrent_spawn_limit and not api.active_server_limit:
        return
    if locked:
        await xact_lock(session, AdvisoryLock.SPAWN_LIMITS)
    pending, active = await _count_servers(session)
    pending, active = pending - counted, active - counted
    if api.concurrent_spawn_limit and pending >= api.concurrent_spawn_limit:
        retry = int(random.uniform(*SPAWN_RETRY_RANGE))  # spread the retries of a crowd
        raise TooManyRequests(f"Too many users trying to log in right now. Try again in {_human(retry)}.",
                              retry_after=retry)
    if api.active_server_limit and active >= api.active_server_limit:
        raise TooManyRequests("Active user limit exceeded. Try again in a few minutes.", retry_after=ACTIVE_RETRY_AFTER)


async def start_server(session: AsyncSession, settings: ServiceSettings, secret_key: str, user: User,
                       server_name: str, user_options: dict[str, Any] | None, *, announcer: Announcer,
                       display_name: str | None = None) -> StartResult:
    """Record desired state 'running' under a new spawn id, the server's token and the spawn command
    (`lifecycle.transition`: the relay sends it once the caller commits).

    `display_name`, when given, is stored once the start is accepted.

    Raises:
        BadRequest: already running, or stopping; or the options name an unknown profile, or one its backend
            refuses (a disallowed image).
        TooManyRequests: a hub-wide limit is reached.
    """
    await session.execute(
        insert(Server).values(user_id=user.id, name=server_name, desired=DesiredState.STOPPED, user_options={},
                              display_name=display_name if server_name else None)
        .on_conflict_do_nothing(index_elements=["user_id", "name"])
    )
    view = await one_server_view(session, user, server_name, lock=True)
    assert view is not None
    active, ready, pending = view.status
    if pending == Pending.SPAWN:
        assert view.server.spawn_id is not None
        return StartResult(view.server.spawn_id, started=False)
    if ready and pending is None:
        raise BadRequest(f"{label(user.name, server_name)} is already running")
    if active:
        raise BadRequest(f"{label(user.name, server_name)} is pending {pending or Pending.STOP}, please wait")
    # refused before anything is written when the limit is already reached (a storm's excess is most of it)
    await check_limits(session, settings, locked=False)
    spawn_id = new_id()
    srv = view.server
    options = user_options if user_options is not None else srv.user_options or {}  # None: the previous ones
    # the profile and backend the options choose, checked before anything is sent: a bad one is a 400
    choice = resolve(settings.spawner, options, configure_for)
    request = Request.start(ServerKey(user.name, server_name), spawn_id, user_options=choice.user_options,
                            backend=choice.backend,
                            expected=frozenset({DesiredState(srv.desired)}), expected_spawn=srv.spawn_id,
                            display_name=display_name if server_name else None, server_id=srv.id)
    moved = await transition(session, request, announcer)
    assert moved is not None, "the row is locked: it is as read"
    prefix = server_prefix(user.name, server_name)
    session.add(ApiToken(
        user_id=user.id, hashed=hash_token(server_token(secret_key, spawn_id)), kind="server",
        note=f"Server at {prefix}", spawn_id=spawn_id,
        scopes=[f"users:activity!user={user.name}", f"access:servers!server={user.name}/{server_name}"],
    ))
    # The limits last: their lock serializes every start of the hub until it commits, so it is taken
    # once everything else is written (a storm of 50 starts queued behind each whole transaction).
    # Counted after this spawn's own transition, which the count includes.
    await session.flush()
    await check_limits(session, settings, counted=1)
    return StartResult(spawn_id, started=True)


async def create_server(session: AsyncSession, user: User, server_name: str,
                        request: ServerRequest) -> ServerView[Server, ServerState]:
    """A new named server, stopped (`PUT`); its display name defaults to its name.

    Raises:
        Conflict: it exists already.
    """
    created = (await session.execute(
        insert(Server).values(user_id=user.id, name=server_name, desired=DesiredState.STOPPED,
                              user_options=request.user_options or {},
                              display_name=request.display_name or server_name)
        .on_conflict_do_nothing(index_elements=["user_id", "name"])
        .returning(Server.id)
    )).scalar()
    if created is None:
        raise Conflict(f"User {user.name} already has server {server_name}")
    view = await one_server_view(session, user, server_name)
    assert view is not None
    return view


async def update_server(session: AsyncSession, settings: ServiceSettings, user: User, server_name: str,
                        patch: ServerPatch) -> ServerView[Server, ServerState]:
    """Rename a stopped server and/or change its display name and options (`PATCH`).

    Raises:
        NotFound: no such server.
        BadRequest: it is not stopped, or a new name is invalid.
        Conflict: the new name is taken.
    """
    if (patch.name is not None or patch.display_name) and not settings.api.allow_named_servers:
        raise BadRequest("Named servers are not enabled.")
    if not server_name:  # every user has a default server, in JupyterHub even before its first start
        await session.execute(insert(Server).values(user_id=user.id, name="", desired=DesiredState.STOPPED,
                                                    user_options={})
                              .on_conflict_do_nothing(index_elements=["user_id", "name"]))
    view = await one_server_view(session, user, server_name, lock=True)
    if view is None:
        raise NotFound(f"User {user.name} has no such server {server_name}")
    if view.status.active:
        raise BadRequest(f"{label(user.name, server_name)} is active. Please stop it before modifying it.")
    srv = view.server
    if patch.name is not None:
        await _rename(session, settings, user, srv, patch.name)
    if patch.user_options is not None:
        srv.user_options = patch.user_options
    if patch.display_name:
        srv.display_name = check_display_name(patch.display_name)
    await session.flush()
    session.expunge(srv)  # the next read joins the state rows as they are now
    updated = await one_server_view(session, user, srv.name)
    assert updated is not None
    return updated


async def _rename(session: AsyncSession, settings: ServiceSettings, user: User, srv: Server, new_name: str) -> None:
    """Rename `srv` (locked, stopped), keeping `server_states` (keyed by names) consistent with it.

    The spawner must be done with the server's last spawn (its outcome recorded under the old name);
    that row moves with the server, and a leftover row under the new name (of a removed server) goes.
    """
    old_name = srv.name
    taken = new_name == "" or (await session.execute(
        select(Server.id).where(Server.user_id == user.id, Server.name == new_name)
    )).scalar() is not None
    if taken:
        raise Conflict(f"User {user.name} already has server {new_name!r}")
    # renaming the default server makes a named one (and a new default server): then the limit applies
    await check_named_server(session, settings, user, new_name, new=True, check_limit=old_name == "")
    rows = {r.server_name: r for r in (await session.execute(
        select(ServerState).where(ServerState.user_name == user.name,
                                  ServerState.server_name.in_((old_name, new_name)))
        .with_for_update().execution_options(populate_existing=True)
    )).scalars()}
    at_old, at_new = rows.get(old_name), rows.get(new_name)
    settled = srv.spawn_id is None or (at_old is not None and at_old.spawn_id == srv.spawn_id and at_old.status in DONE)
    if not settled:
        raise BadRequest(f"{label(user.name, old_name)} has a start or stop in progress; "
                         "try again once it is stopped")
    if at_new is not None:
        if at_new.status not in DONE:
            raise Conflict(f"A removed server {new_name!r} of {user.name} is still stopping; try again later")
        await session.execute(delete(ServerState).where(ServerState.user_name == user.name,
                                                        ServerState.server_name == new_name))
    if at_old is not None and srv.spawn_id is not None and at_old.spawn_id == srv.spawn_id:
        await session.execute(update(ServerState).where(ServerState.user_name == user.name,
                                                        ServerState.server_name == old_name)
                              .values(server_name=new_name))
    for row in rows.values():
        session.expunge(row)
    await _follow_shares(session, settings.nats_namespace, user.name, srv.id, old_name, new_name)
    srv.name = new_name


def _refiltered(scopes: list[str] | None, old: str, new: str) -> list[str]:
    return [s[: -len(old)] + new if s.endswith(old) else s for s in scopes or ()]


async def _follow_shares(session: AsyncSession, namespace: str, owner: str, server_id: int, old_name: str,
                         new_name: str) -> None:
    """Shares and share codes carry their server's filter by name: it follows the rename, so grantees keep
    the renamed server and gain nothing on a new server that takes the old name."""
    old, new = f"!server={owner}/{old_name}", f"!server={owner}/{new_name}"
    shares = (await session.execute(select(Share).where(Share.server_id == server_id)
                                    .with_for_update())).scalars().all()
    codes = (await session.execute(select(ShareCode).where(ShareCode.server_id == server_id)
                                   .with_for_update())).scalars().all()
    rows: list[Share | ShareCode] = [*shares, *codes]
    for row in rows:
        row.scopes = _refiltered(row.scopes, old, new)
    users = {share.user_id for share in shares if share.user_id is not None}
    groups = {share.group_id for share in shares if share.group_id is not None}
    if users or groups:
        members = select(GroupMember.user_id).where(GroupMember.group_id.in_(groups))
        grantees = select(User.name).where(or_(User.id.in_(users), User.id.in_(members)))
        names = (await session.execute(grantees)).scalars()
        access_changed(session, namespace, users=list(names))


async def stop_server(session: AsyncSession, user: User, server_name: str, reason: str = "api", *,
                      announcer: Announcer) -> str | None:
    """Record desired state 'stopped' and send the stop command (`lifecycle.transition`: the relay sends it
    once the caller commits); returns the spawn id to wait for.

    None means nothing was running.
    """
    view = await one_server_view(session, user, server_name, lock=True)
    if view is None:
        return None
    active, _, _ = view.status
    srv = view.server
    wanted = view.current_state is not None or srv.desired == DesiredState.RUNNING
    spawn_id = srv.spawn_id if wanted else None
    if view.state is not None and view.current_state is None and view.state.status in ACTIVE:
        spawn_id = view.state.spawn_id  # an older spawn still running
    stopping = spawn_id if active else None
    if stopping is None and srv.desired == DesiredState.STOPPED:
        return None  # nothing to record, nothing to stop
    # a repeated stop is harmless: the spawner's handler is idempotent by spawn id
    # to the workers of the backend running it (recorded by its worker; else the one its start chose)
    backend = view.state.backend if view.state is not None and view.state.spawn_id == stopping else ""
    request = Request.stop(ServerKey(user.name, server_name), stopping, reason=reason,
                           expected=frozenset({DesiredState(srv.desired)}), expected_spawn=srv.spawn_id,
                           server_id=srv.id, backend=backend)
    moved = await transition(session, request, announcer)
    assert moved is not None, "the row is locked: it is as read"
    return stopping


async def remove_server(session: AsyncSession, user: User, server_name: str) -> None:
    """Delete a named server's record (after its stop was requested)."""
    await session.execute(delete(Server).where(Server.user_id == user.id, Server.name == server_name))


async def server_ended(session: AsyncSession, spawn_id: str, namespace: str | None = None) -> None:
    """A spawn stopped or failed: its tokens stop working, and its desired state follows (idempotent).

    Its own token and the OAuth tokens its users got for it are deleted; with `namespace`, each
    deletion is announced (`token.revoked`) so every api replica drops it from its cache at once.
    """
    gone = (await session.execute(
        delete(ApiToken).where(ApiToken.kind.in_(("server", "oauth")), ApiToken.spawn_id == spawn_id)
        .returning(ApiToken.id)
    )).scalars().all()
    if namespace is not None:
        for token_id in gone:
            enqueue(session, TokenRevoked(token_id=token_id, user=None, service=None), namespace, origin="api")
    await session.execute(
        update(Server).where(Server.spawn_id == spawn_id, Server.desired == DesiredState.RUNNING)
        .values(desired=DesiredState.STOPPED)
    )
