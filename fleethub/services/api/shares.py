"""Sharing a server: shares (scopes on one server held by a user or a group), share codes that a user
exchanges for a share, their models, and the reads and writes behind the sharing endpoints.

A share's scopes always carry its server's filter (`name!server=owner/server`). A share changes what
its grantees hold, so every write that changes one announces, in its own transaction, whose scopes
may have changed (`access_changed`; a group share concerns every member). A code is stored only as
its SHA-256.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from sqlalchemy import ColumnElement, and_, delete, false, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from fleethub.services.api.models import ServerView
from fleethub.shared.baseurl import public_path
from fleethub.shared.db.models import Group, GroupMember, Server, ServerState, Share, ShareCode, User
from fleethub.shared.errors import BadRequest, Conflict, NotFound
from fleethub.shared.events import utcnow
from fleethub.shared.http import iso
from fleethub.shared.lifecycle import DesiredState
from fleethub.shared.names import server_prefix
from fleethub.shared.rbac import access_changed
from fleethub.shared.scopes import KNOWN
from fleethub.shared.security import hash_token, new_token
from fleethub.shared.settings import ServiceSettings

MAX_SCOPES = 100
DEFAULT_CODE_TTL = 86400
MAX_CODE_TTL = 365 * 86400
ACCEPT_PATH = "/hub/accept-share"
_CODE_ID = re.compile(r"sc_(\d{1,18})")
_MAX_ID = 2**31 - 1
_MAX_CODE_LENGTH = 1000


class _ScopesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # JupyterHub refuses unknown keys (400)

    scopes: list[StrictStr] | None = Field(None, max_length=MAX_SCOPES)


class ShareBody(_ScopesBody):
    """`POST|PATCH /shares/{owner}/{server}`: with whom (exactly one of `user`, `group`), which scopes."""

    user: StrictStr | None = None
    group: StrictStr | None = None


class ShareCodeBody(_ScopesBody):
    """`POST /share-codes/{owner}/{server}`: the scopes and how long the code lives (1 minute to 1 year)."""

    expires_in: StrictInt = Field(DEFAULT_CODE_TTL, ge=60, le=MAX_CODE_TTL)


@dataclass(frozen=True)
class Grantee:
    """Whom a share is for."""

    kind: str  # "user" | "group"
    name: str


def grantee_of(body: ShareBody) -> Grantee:
    """The one user or group a share request names.

    Raises:
        BadRequest: both or neither.
    """
    if body.user is not None and body.group is not None:
        raise BadRequest("Expected exactly one of `user` or `group`, not both.")
    if body.user is not None:
        return Grantee("user", body.user)
    if body.group is not None:
        return Grantee("group", body.group)
    raise BadRequest("Specify exactly one of `user` or `group`")


def _shown(text: str) -> str:
    """Client text quoted in a message: short, and encodable (JSON may carry lone surrogates)."""
    return text[:200].encode("utf-8", "replace").decode("utf-8")


def _storable(*texts: str) -> bool:
    """Whether PostgreSQL can hold these strings (no NUL, no lone surrogate); other names match nothing."""
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
        if "\x00" in text:
            return False
    return True


def default_scopes(owner: str, server_name: str) -> list[str]:
    """What a share grants when no scopes are named: access to the server."""
    return [f"access:servers!server={owner}/{server_name}"]


def share_scopes(requested: Sequence[str] | None, owner: str, server_name: str) -> list[str] | None:
    """The scopes as stored, each with the server's filter (added where absent); None if none are named.

    Raises:
        BadRequest: an unknown scope, or a filter other than the server's.
    """
    if not requested:
        return None
    server_filter = f"server={owner}/{server_name}"
    out: set[str] = set()
    for text in requested:
        name, bang, flt = text.partition("!")
        if name not in KNOWN:
            raise BadRequest(f"Scope '{_shown(text)}' for share does not exist")
        if bang and flt != server_filter:
            raise BadRequest(f"!{_shown(flt)} not allowed on sharing {_shown(text)}, only !{server_filter}")
        out.add(f"{name}!{server_filter}")
    return sorted(out)


def _code_hash(code: str) -> str | None:
    """The stored form of a code; None for what cannot be one."""
    if not code or len(code) > _MAX_CODE_LENGTH or not _storable(code):
        return None
    return hash_token(code)


@dataclass(frozen=True)
class Links:
    """Where the URLs in share models point: the configured public URL (None: no `full_url`s) and the
    hub's base_url."""

    public_url: str | None
    base_url: str = "/"

    @classmethod
    def of(cls, settings: ServiceSettings) -> Links:
        return cls(settings.public_url, settings.base_url)


def _full_url(links: Links, path: str) -> str | None:
    """`path` on the configured public origin; None when no public URL is configured."""
    if not links.public_url:
        return None
    parts = urlsplit(links.public_url)
    return f"{parts.scheme}://{parts.netloc}{path}"


def _server_model(owner: str, server: Server, state: ServerState | None, links: Links) -> dict[str, Any]:
    """The truncated Server model of shares: name, url, full_url, ready and the owner's name."""
    _, ready, _ = ServerView(server, state).status
    url = public_path(links.base_url, server_prefix(owner, server.name))
    return {"user": {"name": owner}, "name": server.name, "url": url, "full_url": _full_url(links, url),
            "ready": ready}


# ---------------------------------------------------------------------------------------------
# lookups


async def find_server(session: AsyncSession, owner: str, server_name: str, *, create: bool = False,
                      lock: bool = False) -> Server | None:
    """The server `owner/server_name`; `lock` (implied by `create`): kept from being deleted until commit.

    Every user has a default server, as in JupyterHub, even before it was first started: without
    `create` that is None, with `create` its record is made.

    Raises:
        NotFound: no such user, or no such named server.
    """
    missing = NotFound(f"No such server: {owner}/{server_name}")
    if "/" in server_name or not _storable(owner, server_name):
        raise missing
    lock = lock or create
    user_query = select(User.id).where(User.name == owner)
    uid = (await session.execute(user_query.with_for_update(key_share=True) if lock else user_query)).scalar()
    if uid is None:
        raise missing
    if create and server_name == "":
        await session.execute(insert(Server).values(user_id=uid, name="", desired=DesiredState.STOPPED, user_options={})
                              .on_conflict_do_nothing(index_elements=["user_id", "name"]))
    query = select(Server).where(Server.user_id == uid, Server.name == server_name)
    server = (await session.execute(query.with_for_update(key_share=True) if lock else query)).scalar()
    if server is None and server_name != "":
        raise missing
    return server


async def _grantee_id(session: AsyncSession, grantee: Grantee, *, lock: bool = False) -> int | None:
    """The row id of the user or group, or None; `lock`: keep it from being deleted until commit."""
    if not _storable(grantee.name):
        return None
    model = User if grantee.kind == "user" else Group
    query = select(model.id).where(model.name == grantee.name)
    if lock:
        query = query.with_for_update(key_share=True)
    return (await session.execute(query)).scalar()


async def owner_clause(session: AsyncSession, model: type[Share | ShareCode], owner: str,
                       server_name: str | None) -> list[ColumnElement[bool]]:
    """The filter of shares (or codes) of all of `owner`'s servers (`server_name` None) or of one.

    Raises:
        NotFound: no such user or server.
    """
    if server_name is None:
        uid = await _grantee_id(session, Grantee("user", owner))
        if uid is None:
            raise NotFound(f"No such user: {owner}")
        return [Server.user_id == uid]
    server = await find_server(session, owner, server_name)
    return [model.server_id == server.id] if server is not None else [false()]


async def shared_with_clause(session: AsyncSession, grantee: Grantee) -> list[ColumnElement[bool]]:
    """The filter of shares a user holds (directly or through a group) or a group holds.

    Raises:
        NotFound: no such user or group.
    """
    gid = await _grantee_id(session, grantee)
    if gid is None:
        raise NotFound(f"No such {grantee.kind}: {grantee.name}")
    if grantee.kind == "group":
        return [Share.group_id == gid]
    return [or_(Share.user_id == gid,
                Share.group_id.in_(select(GroupMember.group_id).where(GroupMember.user_id == gid)))]


# ---------------------------------------------------------------------------------------------
# models and lists

_Owner = aliased(User)
_Grantee = aliased(User)


async def list_shares(session: AsyncSession, where: Sequence[ColumnElement[bool]], offset: int, limit: int,
                      links: Links) -> tuple[list[dict[str, Any]], int]:
    """One page of Share models (oldest first) and the total; two queries."""
    total = (await session.execute(select(func.count()).select_from(Share)
                                   .join(Server, Server.id == Share.server_id).where(*where))).scalar_one()
    rows = await session.execute(
        select(Share, Server, ServerState, _Owner.name, _Grantee.name, Group.name)
        .join(Server, Server.id == Share.server_id)
        .join(_Owner, _Owner.id == Server.user_id)
        .outerjoin(ServerState, and_(ServerState.user_name == _Owner.name, ServerState.server_name == Server.name))
        .outerjoin(_Grantee, _Grantee.id == Share.user_id)
        .outerjoin(Group, Group.id == Share.group_id)
        .where(*where).order_by(Share.id).offset(offset).limit(limit)
    )
    items = [{
        "server": _server_model(owner, server, state, links),
        "scopes": list(share.scopes or []),
        "user": {"name": user} if user is not None else None,
        "group": {"name": group} if group is not None else None,
        "kind": "group" if group is not None else "user",
        "created_at": iso(share.created),
    } for share, server, state, owner, user, group in rows.all()]
    return items, int(total)


async def _share_model(session: AsyncSession, share_id: int, links: Links) -> dict[str, Any]:
    items, _ = await list_shares(session, [Share.id == share_id], 0, 1, links)
    return items[0]


async def list_codes(session: AsyncSession, where: Sequence[ColumnElement[bool]], offset: int, limit: int,
                     links: Links) -> tuple[list[dict[str, Any]], int]:
    """One page of the ShareCode models of codes not yet expired (oldest first) and the total."""
    where = [*where, ShareCode.expires_at > utcnow()]
    total = (await session.execute(select(func.count()).select_from(ShareCode)
                                   .join(Server, Server.id == ShareCode.server_id).where(*where))).scalar_one()
    rows = await session.execute(
        select(ShareCode, Server, ServerState, _Owner.name)
        .join(Server, Server.id == ShareCode.server_id)
        .join(_Owner, _Owner.id == Server.user_id)
        .outerjoin(ServerState, and_(ServerState.user_name == _Owner.name, ServerState.server_name == Server.name))
        .where(*where).order_by(ShareCode.id).offset(offset).limit(limit)
    )
    items = [{
        "server": _server_model(owner, server, state, links),
        "scopes": list(code.scopes or []),
        "id": f"sc_{code.id}",
        "created_at": iso(code.created),
        "expires_at": iso(code.expires_at),
        "exchange_count": code.exchange_count,
        "last_exchanged_at": iso(code.last_exchanged_at),
    } for code, server, state, owner in rows.all()]
    return items, int(total)


# ---------------------------------------------------------------------------------------------
# granting and revoking


async def _announce(session: AsyncSession, namespace: str, users: Iterable[int], groups: Iterable[int]) -> None:
    """`access_changed` for these users and every member of these groups."""
    users, groups = set(users), set(groups)
    clauses = ([User.id.in_(users)] if users else []) + (
        [User.id.in_(select(GroupMember.user_id).where(GroupMember.group_id.in_(groups)))] if groups else [])
    if not clauses:
        return
    names = list((await session.execute(select(User.name).where(or_(*clauses)))).scalars())
    if names:
        access_changed(session, namespace, users=names)


async def _upsert(session: AsyncSession, namespace: str, server_id: int, kind: str, gid: int,
                  scopes: list[str]) -> int:
    """Create the share, or add `scopes` to the existing one; returns its id."""
    column = "user_id" if kind == "user" else "group_id"
    share_id = (await session.execute(
        insert(Share).values(server_id=server_id, scopes=sorted(set(scopes)), **{column: gid})
        .on_conflict_do_nothing(index_elements=["server_id", column]).returning(Share.id)
    )).scalar()
    if share_id is None:
        share = (await session.execute(select(Share).where(Share.server_id == server_id, getattr(Share, column) == gid)
                                       .with_for_update())).scalar()
        if share is None:  # deleted between the insert and the select
            raise Conflict("The share changed while granting it; try again")
        merged = sorted(set(share.scopes or []) | set(scopes))
        if merged == sorted(share.scopes or []):
            return share.id
        share.scopes = merged
        share_id = share.id
    await _announce(session, namespace, [gid] if kind == "user" else [], [gid] if kind == "group" else [])
    return share_id


async def grant_share(session: AsyncSession, namespace: str, server: Server, grantee: Grantee, scopes: list[str],
                      links: Links) -> dict[str, Any]:
    """Share `server` with the user or group (adding to an existing share); the Share model.

    Raises:
        BadRequest: no such user or group.
    """
    gid = await _grantee_id(session, grantee, lock=True)
    if gid is None:
        raise BadRequest(f"No such {grantee.kind}: {_shown(grantee.name)}")
    return await _share_model(session, await _upsert(session, namespace, server.id, grantee.kind, gid, scopes),
                              links)


async def revoke_share(session: AsyncSession, namespace: str, server: Server | None, grantee: Grantee,
                       scopes: list[str] | None, links: Links) -> dict[str, Any]:
    """Take `scopes` (None: all) from the grantee's share of `server`; the Share model, or `{}` if none is
    left (an unknown user or group has nothing to revoke)."""
    gid = await _grantee_id(session, grantee) if server is not None else None
    if server is None or gid is None:
        return {}
    column = Share.user_id if grantee.kind == "user" else Share.group_id
    share = (await session.execute(select(Share).where(Share.server_id == server.id, column == gid)
                                   .with_for_update())).scalar()
    if share is None:
        return {}
    held = list(share.scopes or [])
    remaining = [s for s in held if s not in scopes] if scopes is not None else []
    if remaining == held:
        return await _share_model(session, share.id, links)
    if remaining:
        share.scopes = remaining
    else:
        await session.execute(delete(Share).where(Share.id == share.id))
    await _announce(session, namespace, [share.user_id] if share.user_id else [],
                    [share.group_id] if share.group_id else [])
    return await _share_model(session, share.id, links) if remaining else {}


async def revoke_all(session: AsyncSession, namespace: str, server: Server | None) -> None:
    """Delete every share of `server`."""
    if server is None:
        return
    rows = (await session.execute(delete(Share).where(Share.server_id == server.id)
                                  .returning(Share.user_id, Share.group_id))).all()
    await _announce(session, namespace, [u for u, _ in rows if u is not None], [g for _, g in rows if g is not None])


async def _one_share(session: AsyncSession, grantee: Grantee, owner: str, server_name: str) -> Share:
    missing = NotFound(f"No such share for {grantee.kind} {grantee.name} on {owner}/{server_name}")
    gid = await _grantee_id(session, grantee)
    try:
        server = await find_server(session, owner, server_name)
    except NotFound:
        raise missing from None
    if gid is None or server is None:
        raise missing
    column = Share.user_id if grantee.kind == "user" else Share.group_id
    share = (await session.execute(select(Share).where(Share.server_id == server.id, column == gid)
                                   .with_for_update())).scalar()
    if share is None:
        raise missing
    return share


async def get_shared(session: AsyncSession, grantee: Grantee, owner: str, server_name: str,
                     links: Links) -> dict[str, Any]:
    """The Share model of the grantee's own share of `owner/server_name` (not one through a group).

    Raises:
        NotFound: no such share.
    """
    share = await _one_share(session, grantee, owner, server_name)
    return await _share_model(session, share.id, links)


async def leave_share(session: AsyncSession, namespace: str, grantee: Grantee, owner: str, server_name: str) -> None:
    """The grantee gives up its share of `owner/server_name`.

    Raises:
        NotFound: no such share.
    """
    share = await _one_share(session, grantee, owner, server_name)
    await session.execute(delete(Share).where(Share.id == share.id))
    await _announce(session, namespace, [share.user_id] if share.user_id else [],
                    [share.group_id] if share.group_id else [])


# ---------------------------------------------------------------------------------------------
# share codes


def accept_url(code: str) -> str:
    """The page where a logged-in user accepts the invitation of `code`."""
    return f"{ACCEPT_PATH}?{urlencode({'code': code})}"


async def create_code(session: AsyncSession, server: Server, scopes: list[str], expires_in: int,
                      links: Links) -> dict[str, Any]:
    """A new code for `server`: the ShareCode model plus the code and its accept URLs (shown only now)."""
    code = new_token()
    now = utcnow()
    await session.execute(delete(ShareCode).where(ShareCode.server_id == server.id, ShareCode.expires_at <= now))
    code_id = (await session.execute(insert(ShareCode).values(
        server_id=server.id, hashed=hash_token(code), scopes=scopes, expires_at=now + timedelta(seconds=expires_in),
        exchange_count=0,
    ).returning(ShareCode.id))).scalar_one()
    (model,), _ = await list_codes(session, [ShareCode.id == code_id], 0, 1, links)
    url = public_path(links.base_url, accept_url(code))
    return {**model, "code": code, "accept_url": url, "full_accept_url": _full_url(links, url)}


async def delete_codes(session: AsyncSession, server: Server | None, *, code: str | None, code_id: str | None) -> None:
    """Delete one code of `server` (by the code itself, or by its `sc_N` id), or all of them.

    Raises:
        NotFound: no such code of this server.
    """
    if code:
        hashed = _code_hash(code)
        found = server is not None and hashed is not None and (await session.execute(
            delete(ShareCode).where(ShareCode.server_id == server.id, ShareCode.hashed == hashed)
            .returning(ShareCode.id))).first() is not None
        if not found:
            raise NotFound("No matching code found")
    elif code_id:
        m = _CODE_ID.fullmatch(code_id)
        number = int(m.group(1)) if m else 0
        found = server is not None and 0 < number <= _MAX_ID and (await session.execute(
            delete(ShareCode).where(ShareCode.server_id == server.id, ShareCode.id == number)
            .returning(ShareCode.id))).first() is not None
        if not found:
            raise NotFound(f"No code found matching id={code_id[:100]}")
    elif server is not None:
        await session.execute(delete(ShareCode).where(ShareCode.server_id == server.id))


@dataclass(frozen=True)
class Invitation:
    """What a share code offers: whose server, which scopes, whether it runs."""

    code_id: int
    owner_id: int
    owner: str
    server_id: int
    server_name: str
    scopes: list[str]
    ready: bool

    @property
    def url(self) -> str:
        """The shared server's URL."""
        return server_prefix(self.owner, self.server_name)


async def find_invitation(session: AsyncSession, code: str, *, lock: bool = False) -> Invitation | None:
    """The unexpired code `code`, or None; `lock`: keep it, its server and owner until commit."""
    hashed = _code_hash(code)
    if hashed is None:
        return None
    query = (select(ShareCode, Server, User, ServerState)
             .join(Server, Server.id == ShareCode.server_id).join(User, User.id == Server.user_id)
             .outerjoin(ServerState, and_(ServerState.user_name == User.name, ServerState.server_name == Server.name))
             .where(ShareCode.hashed == hashed, ShareCode.expires_at > utcnow()))
    if lock:
        query = query.with_for_update(key_share=True, of=[ShareCode, Server, User])
    row = (await session.execute(query)).first()
    if row is None:
        return None
    share_code, server, owner, state = row
    _, ready, _ = ServerView(server, state).status
    return Invitation(share_code.id, owner.id, owner.name, server.id, server.name, list(share_code.scopes or []),
                      ready)


async def exchange_code(session: AsyncSession, namespace: str, code: str, user_id: int) -> Invitation:
    """The user accepts the invitation: its share of the server gains the code's scopes; the code counts
    the exchange.

    Raises:
        BadRequest: an unknown or expired code, or one for the user's own server.
    """
    invitation = await find_invitation(session, code, lock=True)
    if invitation is None:
        raise BadRequest("Invalid or expired share code")
    if invitation.owner_id == user_id:
        raise BadRequest("You can't share with yourself!")
    grantee = select(User.id).where(User.id == user_id).with_for_update(key_share=True)
    if (await session.execute(grantee)).scalar() is None:
        raise NotFound("No such user")
    await _upsert(session, namespace, invitation.server_id, "user", user_id, invitation.scopes)
    # counted even when the share already held every scope (JupyterHub counts every exchange)
    await session.execute(update(ShareCode).where(ShareCode.id == invitation.code_id).values(
        exchange_count=ShareCode.exchange_count + 1, last_exchanged_at=utcnow()))
    return invitation
