"""`/hub/api/shares`, `/hub/api/share-codes` and `/users|groups/{name}/shared`: sharing servers.

Lists always answer in the paginated form. `{server_name:path}` matches the empty name of the default
server (`/shares/alice/`); a name with a `/` is no server.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from fleethub.services.api.access import Requester
from fleethub.services.api.deps import CurrentUser, Runtime
from fleethub.services.api.paging import page_of, page_response
from fleethub.services.api.schemas import parse_body
from fleethub.services.api.shares import (
    Grantee,
    Links,
    ShareBody,
    ShareCodeBody,
    create_code,
    default_scopes,
    delete_codes,
    find_server,
    get_shared,
    grant_share,
    grantee_of,
    leave_share,
    list_codes,
    list_shares,
    owner_clause,
    revoke_all,
    revoke_share,
    share_scopes,
    shared_with_clause,
)
from fleethub.shared.db.models import Share, ShareCode
from fleethub.shared.errors import Forbidden
from fleethub.shared.http import DbSession

router = APIRouter(prefix="/hub/api")


def _may_grant(req: Requester, owner: str, server_name: str, scopes: list[str], grantee: Grantee | None) -> None:
    """A sharer can only give what it holds, and must be able to name whom it shares with (JupyterHub)."""
    for scope in scopes:
        if not req.can(scope.partition("!")[0], owner, server_name):
            raise Forbidden(f"Do not have permission to grant share with scope {scope}")
    if grantee is not None and grantee.kind == "user" and not req.can("read:users:name", grantee.name):
        raise Forbidden("Need scope 'read:users:name' to share with users by name")
    if grantee is not None and grantee.kind == "group" and not req.can("read:groups:name", group=grantee.name):
        raise Forbidden("Need scope 'read:groups:name' to share with groups by name")


# ---------------------------------------------------------------------------------------------
# shares of a user's servers


@router.get("/shares/{owner}")
@router.get("/shares/{owner}/{server_name:path}")
async def list_owner_shares(owner: str, request: Request, req: CurrentUser, runtime: Runtime, session: DbSession,
                            server_name: str | None = None, offset: int = 0, limit: int | None = None) -> Response:
    """The shares of all of `owner`'s servers, or of one."""
    req.require("read:shares", user=owner, server_name=server_name)
    page = page_of(request, offset, limit, always=True)
    where = await owner_clause(session, Share, owner, server_name)
    items, total = await list_shares(session, where, page.offset, page.limit, Links.of(runtime.settings))
    return page_response(request, page, items, total)


@router.post("/shares/{owner}/{server_name:path}")
async def post_share(owner: str, server_name: str, request: Request, req: CurrentUser, runtime: Runtime,
                     session: DbSession) -> dict[str, Any]:
    req.require("shares", user=owner, server_name=server_name)
    body = await parse_body(request, ShareBody, required=False)
    grantee = grantee_of(body)
    scopes = share_scopes(body.scopes, owner, server_name) or default_scopes(owner, server_name)
    _may_grant(req, owner, server_name, scopes, grantee)
    async with session.begin():
        server = await find_server(session, owner, server_name, create=True)
        assert server is not None
        model = await grant_share(session, runtime.settings.nats_namespace, server, grantee, scopes,
                                  Links.of(runtime.settings))
    runtime.relay.kick()
    return model


@router.patch("/shares/{owner}/{server_name:path}")
async def patch_share(owner: str, server_name: str, request: Request, req: CurrentUser, runtime: Runtime,
                      session: DbSession) -> JSONResponse:
    req.require("shares", user=owner, server_name=server_name)
    body = await parse_body(request, ShareBody, required=False)
    grantee = grantee_of(body)
    scopes = share_scopes(body.scopes, owner, server_name)  # None: revoke everything
    async with session.begin():
        server = await find_server(session, owner, server_name)
        model = await revoke_share(session, runtime.settings.nats_namespace, server, grantee, scopes,
                                   Links.of(runtime.settings))
    runtime.relay.kick()
    return JSONResponse(model)


@router.delete("/shares/{owner}/{server_name:path}", status_code=204)
async def delete_shares(owner: str, server_name: str, req: CurrentUser, runtime: Runtime,
                        session: DbSession) -> Response:
    req.require("shares", user=owner, server_name=server_name)
    async with session.begin():
        await revoke_all(session, runtime.settings.nats_namespace, await find_server(session, owner, server_name))
    runtime.relay.kick()
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# share codes


@router.get("/share-codes/{owner}")
@router.get("/share-codes/{owner}/{server_name:path}")
async def list_owner_codes(owner: str, request: Request, req: CurrentUser, runtime: Runtime, session: DbSession,
                           server_name: str | None = None, offset: int = 0, limit: int | None = None) -> Response:
    """The share codes of all of `owner`'s servers, or of one."""
    req.require("read:shares", user=owner, server_name=server_name)
    page = page_of(request, offset, limit, always=True)
    where = await owner_clause(session, ShareCode, owner, server_name)
    items, total = await list_codes(session, where, page.offset, page.limit, Links.of(runtime.settings))
    return page_response(request, page, items, total)


@router.post("/share-codes/{owner}/{server_name:path}")
async def post_code(owner: str, server_name: str, request: Request, req: CurrentUser, runtime: Runtime,
                    session: DbSession) -> dict[str, Any]:
    req.require("shares", user=owner, server_name=server_name)
    body = await parse_body(request, ShareCodeBody, required=False)
    scopes = share_scopes(body.scopes, owner, server_name) or default_scopes(owner, server_name)
    _may_grant(req, owner, server_name, scopes, None)
    async with session.begin():
        server = await find_server(session, owner, server_name, create=True)
        assert server is not None
        model = await create_code(session, server, scopes, body.expires_in, Links.of(runtime.settings))
    return model


@router.delete("/share-codes/{owner}/{server_name:path}", status_code=204)
async def delete_code(owner: str, server_name: str, req: CurrentUser, session: DbSession,
                      code: str | None = Query(None, max_length=1000),
                      code_id: str | None = Query(None, alias="id", max_length=100)) -> Response:
    req.require("shares", user=owner, server_name=server_name)
    async with session.begin():
        await delete_codes(session, await find_server(session, owner, server_name), code=code, code_id=code_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# what is shared with a user or a group


@router.get("/users/{name}/shared")
async def user_shared(name: str, request: Request, req: CurrentUser, runtime: Runtime, session: DbSession,
                      offset: int = 0, limit: int | None = None) -> Response:
    req.require("read:users:shares", user=name)
    return await _shared_list(Grantee("user", name), request, runtime, session, offset, limit)


@router.get("/groups/{name}/shared")
async def group_shared(name: str, request: Request, req: CurrentUser, runtime: Runtime, session: DbSession,
                       offset: int = 0, limit: int | None = None) -> Response:
    req.require("read:groups:shares", group=name)
    return await _shared_list(Grantee("group", name), request, runtime, session, offset, limit)


async def _shared_list(grantee: Grantee, request: Request, runtime: Runtime, session: DbSession, offset: int,
                       limit: int | None) -> Response:
    page = page_of(request, offset, limit, always=True)
    where = await shared_with_clause(session, grantee)
    items, total = await list_shares(session, where, page.offset, page.limit, Links.of(runtime.settings))
    return page_response(request, page, items, total)


@router.get("/users/{name}/shared/{owner}/{server_name:path}")
async def user_shared_one(name: str, owner: str, server_name: str, req: CurrentUser, runtime: Runtime,
                          session: DbSession) -> dict[str, Any]:
    req.require("read:users:shares", user=name)
    return await get_shared(session, Grantee("user", name), owner, server_name, Links.of(runtime.settings))


@router.get("/groups/{name}/shared/{owner}/{server_name:path}")
async def group_shared_one(name: str, owner: str, server_name: str, req: CurrentUser, runtime: Runtime,
                           session: DbSession) -> dict[str, Any]:
    req.require("read:groups:shares", group=name)
    return await get_shared(session, Grantee("group", name), owner, server_name, Links.of(runtime.settings))


@router.delete("/users/{name}/shared/{owner}/{server_name:path}", status_code=204)
async def user_leave(name: str, owner: str, server_name: str, req: CurrentUser, runtime: Runtime,
                     session: DbSession) -> Response:
    req.require("users:shares", user=name)
    return await _leave(Grantee("user", name), owner, server_name, runtime, session)


@router.delete("/groups/{name}/shared/{owner}/{server_name:path}", status_code=204)
async def group_leave(name: str, owner: str, server_name: str, req: CurrentUser, runtime: Runtime,
                      session: DbSession) -> Response:
    req.require("groups:shares", group=name)
    return await _leave(Grantee("group", name), owner, server_name, runtime, session)


async def _leave(grantee: Grantee, owner: str, server_name: str, runtime: Runtime, session: DbSession) -> Response:
    async with session.begin():
        await leave_share(session, runtime.settings.nats_namespace, grantee, owner, server_name)
    runtime.relay.kick()
    return Response(status_code=204)
