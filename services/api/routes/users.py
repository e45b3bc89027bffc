"""`/hub/api/user`, `/hub/api/users`, `/hub/api/users/{name}`, tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from shared.db.models import ApiToken, User
from shared.errors import BadRequest, Conflict
from shared.events import utcnow
from shared.security import hash_token, new_token

from services.api.access import require_admin, require_user_access, scopes_of
from services.api.deps import CurrentIdentity, DbSession, RuntimeDep
from services.api.models import token_model, user_model
from services.api.queries import get_user, server_views
from services.api.schemas import TokenCreate, UserCreate, UsersCreate, parse_body
from services.api.users import create_users, delete_user

router = APIRouter(prefix="/hub/api")


@router.get("/user")
async def whoami(ident: CurrentIdentity, session: DbSession) -> dict[str, Any]:
    user = await get_user(session, ident.name)
    views = await server_views(session, [user])
    model = user_model(user, views.get(user.id, []))
    model["scopes"] = scopes_of(ident)
    model["session_id"] = ident.session_id
    model["token_id"] = f"a{ident.token_id}" if ident.token_id is not None else None
    return model


@router.get("/users")
async def list_users(
    ident: CurrentIdentity,
    session: DbSession,
    offset: int = Query(0, ge=0),
    limit: int = Query(200, ge=1),
    include_stopped_servers: bool = False,
) -> list[dict[str, Any]]:
    require_admin(ident, "list:users")
    users = list((await session.execute(select(User).order_by(User.id).offset(offset).limit(min(limit, 200)))).scalars())
    views = await server_views(session, users)
    return [user_model(u, views.get(u.id, []), include_stopped=include_stopped_servers) for u in users]


@router.post("/users", status_code=201)
async def post_users(request: Request, ident: CurrentIdentity, runtime: RuntimeDep, session: DbSession) -> list[dict[str, Any]]:
    require_admin(ident, "admin:users")
    body = await parse_body(request, UsersCreate, required=True)
    async with session.begin():
        created = await create_users(session, runtime.settings, body.usernames, body.admin)
    runtime.relay.kick()
    return [user_model(u, []) for u in created]


@router.post("/users/{name}", status_code=201)
async def post_user(name: str, request: Request, ident: CurrentIdentity, runtime: RuntimeDep,
                    session: DbSession) -> dict[str, Any]:
    require_admin(ident, "admin:users")
    body = await parse_body(request, UserCreate, required=False)
    try:
        async with session.begin():
            created = await create_users(session, runtime.settings, [name], body.admin)
    except Conflict:
        raise Conflict(f"User {name} already exists") from None
    runtime.relay.kick()
    return user_model(created[0], [])


@router.get("/users/{name}")
async def get_one(name: str, ident: CurrentIdentity, session: DbSession,
                  include_stopped_servers: bool = False) -> dict[str, Any]:
    require_user_access(ident, name, "read:users")
    user = await get_user(session, name)
    views = await server_views(session, [user])
    return user_model(user, views.get(user.id, []), with_state=ident.admin, include_stopped=include_stopped_servers)


@router.delete("/users/{name}", status_code=204)
async def delete_one(name: str, ident: CurrentIdentity, runtime: RuntimeDep, session: DbSession) -> Response:
    require_admin(ident, "delete:users")
    if name == ident.name:
        raise BadRequest("Cannot delete yourself!")
    async with session.begin():
        user = await get_user(session, name)
        await delete_user(session, runtime.settings, user)
    runtime.relay.kick()
    return Response(status_code=204)


@router.post("/users/{name}/tokens", status_code=201)
async def post_token(name: str, request: Request, ident: CurrentIdentity, session: DbSession) -> JSONResponse:
    require_user_access(ident, name, "tokens")
    body = await parse_body(request, TokenCreate, required=False)
    if body.scopes is not None and body.roles is not None:
        raise BadRequest("Specify only one of scopes or roles")
    scopes = body.scopes if body.scopes is not None else ["inherit"]
    if not ident.admin and any(s not in ("inherit",) and not s.endswith(f"!user={name}") for s in scopes):
        raise BadRequest(f"Not assigning requested scopes {scopes}: you do not hold them")
    async with session.begin():
        user = await get_user(session, name)
        token = new_token()
        row = ApiToken(
            user_id=user.id, hashed=hash_token(token), kind="api", note=body.note or "Requested via api",
            scopes=scopes, expires_at=utcnow() + timedelta(seconds=body.expires_in) if body.expires_in else None,
        )
        session.add(row)
        await session.flush()
        await session.refresh(row)
    model = token_model(row, user.name)
    model["token"] = token
    return JSONResponse(model, status_code=201)
