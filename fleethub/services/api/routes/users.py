"""`/hub/api/user` (who am I), `/hub/api/users` and `/hub/api/users/{name}`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.access import Requester
from fleethub.services.api.deps import BaseUrl, Crypt, CurrentUser, DbSession, ReadSession, Runtime
from fleethub.services.api.hub_services import SERVICE_FIELDS, get_service, service_model, service_roles
from fleethub.services.api.models import MODEL_SCOPES, READ_USER_SCOPES, Can, user_model
from fleethub.services.api.paging import page_of, page_response
from fleethub.services.api.queries import USER_SORTS, USER_STATES, UserQuery, get_user, list_users, user_in_full
from fleethub.services.api.schemas import UserCreate, UsersCreate, parse_body
from fleethub.services.api.users import CREATE_CHUNK, UserPatch, create_users, delete_user, update_user
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.db.models import User
from fleethub.shared.errors import BadRequest, Conflict, Forbidden
from fleethub.shared.scopes import ScopeError, grantable

router = APIRouter(prefix="/hub/api")
_IDENTIFY = ("read:users:name", "read:users:groups")


def _can(req: Requester, name: str, *, identify: bool = False, hubwide: frozenset[str] = frozenset()) -> Can:
    """`req`'s scopes on user `name` and its servers (`hubwide`: scopes already known to be held hub-wide,
    for a list that asks for every user)."""
    def can(scope: str, server_name: str | None) -> bool:
        if scope in hubwide or (identify and server_name is None and scope in _IDENTIFY):
            return True  # (whoami always identifies its owner)
        return req.can(scope, name, server_name)

    return can


async def model_for(session: AsyncSession, req: Requester, user: User, crypt: AuthStateCrypt,
                    base_url: str) -> dict[str, Any]:
    """The User model of one user as `req` may see it (callers checked it may see something)."""
    row, views, links = await user_in_full(session, user.name)
    return user_model(row, views, _can(req, user.name), crypt=crypt, base_url=base_url, links=links) or {}


@router.get("/user")
async def whoami(req: CurrentUser, session: DbSession, crypt: Crypt, base_url: BaseUrl) -> dict[str, Any]:
    if req.kind == "service":
        row = await get_service(session, req.name)
        fields = {f for scope, names in SERVICE_FIELDS.items() if req.can(scope, service=req.name) for f in names}
        model = service_model(row, (await service_roles(session, [row]))[row.id], fields | {"kind", "name", "admin"},
                              base_url=base_url)
    else:
        user, views, links = await user_in_full(session, req.name)
        model = user_model(user, views, _can(req, user.name, identify=True), crypt=crypt, base_url=base_url,
                           links=links) or {}
    model["scopes"] = req.rendered()
    model["session_id"] = req.ident.session_id
    model["token_id"] = f"a{req.ident.token_id}" if req.ident.token_id is not None else None
    return model


@router.get("/users")
async def get_users(request: Request, req: CurrentUser, session: ReadSession, crypt: Crypt, base_url: BaseUrl,
                    offset: int = 0,
                    limit: int | None = None,
                    state: str | None = None, sort: str = "id", name_filter: str | None = None,
                    include_stopped_servers: bool = False) -> Response:
    visible = req.users_visible("list:users")
    if visible is not None and not visible:
        raise Forbidden("Action is not authorized with current scopes; requires any of ['list:users']")
    if state is not None and state not in USER_STATES:
        raise BadRequest(f"Unrecognized state filter: {state[:40]!r}; use one of {list(USER_STATES)}")
    if sort.lstrip("-") not in USER_SORTS:
        raise BadRequest(f"Unrecognized sort: {sort[:40]!r}; use one of {list(USER_SORTS)} (with - to reverse)")
    page = page_of(request, offset, limit)
    query = UserQuery(frozenset(visible) if visible is not None else None, state, name_filter, sort, page.offset,
                      page.limit)
    users, total = await list_users(session, query)
    hubwide = frozenset(s for s in MODEL_SCOPES if req.can(s))
    items = [m for u, views, links in users
             if (m := user_model(u, views, _can(req, u.name, hubwide=hubwide), crypt=crypt, base_url=base_url,
                                 include_stopped=include_stopped_servers, links=links))]
    return page_response(request, page, items, total)


@router.post("/users", status_code=201)
async def post_users(request: Request, req: CurrentUser, runtime: Runtime, session: DbSession,
                     crypt: Crypt, base_url: BaseUrl) -> Response:
    req.require("admin:users")  # hub-wide: a filtered admin:users may not create arbitrary users
    body = await parse_body(request, UsersCreate, required=True)
    if body.admin and not req.ident.admin:
        raise Forbidden("Only admins may create admin users")
    async with session.begin():
        created = await create_users(session, runtime.settings, body.usernames, body.admin)
    runtime.relay.kick()
    items = []
    for i, user in enumerate(created, 1):
        if model := user_model(user, [], _can(req, user.name), crypt=crypt, base_url=base_url):
            items.append(model)
        if i % CREATE_CHUNK == 0:
            await asyncio.sleep(0)  # 10,000 models are ~0.3 s of work: other requests run in between
    return JSONResponse(items, status_code=201)  # encoded at once, not walked by FastAPI's encoder


@router.post("/users/{name}", status_code=201)
async def post_user(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                    session: DbSession, crypt: Crypt, base_url: BaseUrl) -> dict[str, Any]:
    req.require("admin:users", user=name)
    body = await parse_body(request, UserCreate, required=False)
    if body.admin and not req.ident.admin:
        raise Forbidden("Only admins may create admin users")
    try:
        async with session.begin():
            created = await create_users(session, runtime.settings, [name], body.admin)
    except Conflict:
        raise Conflict(f"User {name} already exists") from None
    runtime.relay.kick()
    return await model_for(session, req, created[0], crypt, base_url)


@router.get("/users/{name}")
async def get_one(name: str, req: CurrentUser, session: ReadSession, crypt: Crypt, base_url: BaseUrl,
                  include_stopped_servers: bool = False) -> Response:
    req.require(*READ_USER_SCOPES, user=name)
    user, views, links = await user_in_full(session, name)
    model = user_model(user, views, _can(req, user.name), crypt=crypt, base_url=base_url,
                       include_stopped=include_stopped_servers, links=links)
    return JSONResponse(model or {})


@router.patch("/users/{name}")
async def patch_one(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                    session: DbSession, crypt: Crypt, base_url: BaseUrl) -> dict[str, Any]:
    req.require("admin:users", user=name)
    body = await parse_body(request, UserPatch, required=True)

    def may_grant(scopes: list[str], owner: str) -> None:
        try:
            grantable([s for s in scopes if s not in ("self", "inherit")], owner, [("the requester", req.scopes)])
        except ScopeError as exc:
            raise Forbidden(f"Not assigning a role: {exc}") from None

    async with session.begin():
        user = await get_user(session, name)
        if not req.ident.admin and (user.admin or body.admin):
            raise Forbidden("Only admins may modify admin users or grant admin")
        await update_user(session, runtime.settings, user, body, may_grant, crypt=crypt)
    runtime.relay.kick()
    _forget_here(request, name, user.name)
    model = await model_for(session, req, user, crypt, base_url)
    model["auth_state"] = crypt.open(user.auth_state, user.name)  # JupyterHub's PATCH answer includes it
    return model


@router.delete("/users/{name}", status_code=204)
async def delete_one(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                     session: DbSession) -> Response:
    req.require("delete:users", user=name)
    if req.is_user(name):
        raise BadRequest("Cannot delete yourself!")
    async with session.begin():
        user = await get_user(session, name)
        if user.admin and not req.ident.admin:  # as PATCH: admin:users alone does not reach an admin
            raise Forbidden("Only admins may delete admin users")
        await delete_user(session, runtime.settings, user,
                          announcer=runtime.announcer)
    runtime.relay.kick()
    _forget_here(request, name)
    return Response(status_code=204)


def _forget_here(request: Request, *names: str) -> None:
    """This replica forgets the users' cached tokens and scopes at once, so its next answer sees the change
    (every replica, this one too, also forgets them on the user.updated / user.deleted event, a moment later)."""
    for name in set(names):
        request.state.token_cache.drop_user_named(name)
        request.state.scope_cache.drop("user", [name])
