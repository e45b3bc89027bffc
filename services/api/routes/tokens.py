"""`/hub/api/users/{name}/tokens`: create (the plaintext shown once), list, read and revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shared.errors import BadRequest
from shared.identity import TokenCache

from services.api.deps import CurrentUser, DbSession, Runtime
from services.api.models import token_model
from services.api.queries import get_user
from services.api.schemas import TokenCreate, parse_body
from services.api.scopes import ScopeError, grantable, owner_scopes, scopes_of_roles
from services.api.tokens import create_token, get_token, list_tokens, revoke_token

router = APIRouter(prefix="/hub/api")


@router.post("/users/{name}/tokens")
async def post_token(name: str, request: Request, req: CurrentUser, session: DbSession) -> JSONResponse:
    req.require("tokens", user=name)
    body = await parse_body(request, TokenCreate, required=False)
    if body.scopes is not None and body.roles is not None:
        raise BadRequest("Specify only one of scopes or roles")
    async with session.begin():
        user = await get_user(session, name)
        holders = [(f"user {name}", owner_scopes(name, user.admin))]
        if req.name != name or req.ident.via == "token":
            holders.append(("the requester", req.scopes))
        try:
            wanted = body.scopes if body.scopes is not None else scopes_of_roles(body.roles or ["token"])
            scopes = grantable(wanted, name, holders)
        except ScopeError as exc:
            raise BadRequest(str(exc)) from None
        note = body.note or ("Requested via api" + (f" by user {req.name}" if req.name != name else ""))
        made = await create_token(session, user, note=note, scopes=scopes, expires_in=body.expires_in)
    model = token_model(made.row, name)
    model["token"] = made.token
    return JSONResponse(model, status_code=201)


@router.get("/users/{name}/tokens")
async def get_tokens(name: str, req: CurrentUser, session: DbSession) -> dict[str, Any]:
    req.require("read:tokens", user=name)
    user = await get_user(session, name)
    return {"api_tokens": [token_model(t, name) for t in await list_tokens(session, user)]}


@router.get("/users/{name}/tokens/{token_id}")
async def get_one_token(name: str, token_id: str, req: CurrentUser, session: DbSession) -> dict[str, Any]:
    req.require("read:tokens", user=name)
    user = await get_user(session, name)
    return token_model(await get_token(session, user, token_id), name)


@router.delete("/users/{name}/tokens/{token_id}", status_code=204)
async def delete_token(name: str, token_id: str, request: Request, req: CurrentUser, runtime: Runtime,
                       session: DbSession) -> Response:
    req.require("tokens", user=name)
    async with session.begin():
        user = await get_user(session, name)
        hashed = await revoke_token(session, runtime.settings.nats_namespace, user, token_id)
    runtime.relay.kick()
    cache: TokenCache = request.state.token_cache
    cache.drop(hashed)  # other replicas forget it within their cache TTL
    return Response(status_code=204)
