"""`/hub/api/users/{name}/tokens`: create (the plaintext shown once), list, read and revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.access import load_requester
from fleethub.services.api.credentials import api_identity
from fleethub.services.api.deps import CurrentUser, DbSession, Runtime
from fleethub.services.api.models import token_model
from fleethub.services.api.queries import get_user
from fleethub.services.api.schemas import TokenCreate, parse_body
from fleethub.services.api.tokens import create_token, get_token, list_tokens, revoke_token
from fleethub.shared.authenticators import Authenticator, LoginRefused, as_user, decide
from fleethub.shared.errors import BadRequest, Forbidden, NotFound, TooManyRequests
from fleethub.shared.http import client_address
from fleethub.shared.identity import Identity, TokenCache
from fleethub.shared.names import normalize_username
from fleethub.shared.rbac import ScopeCache, effective_scopes
from fleethub.shared.scopes import ScopeError, grantable, scopes_of_roles
from fleethub.shared.throttle import Attempt, admit, failed, retry_message, succeeded

router = APIRouter(prefix="/hub/api")


async def _credentials(request: Request, runtime: Runtime, session: AsyncSession, body: TokenCreate,
                       name: str) -> Identity | None:
    """Who asks: a token or cookie, else (JupyterHub's scripts) the `auth` credentials in the body."""
    ident = await api_identity(request, runtime.secret_key, session)
    if ident is not None or body.auth is None:
        return ident
    try:
        attempt = Attempt(normalize_username(body.auth.username), client_address(request))
    except BadRequest:
        return None
    await session.rollback()  # end what api_identity read (as the caller would): the count commits on its own
    if runtime.settings.auth.login_throttle:
        async with session.begin():
            wait = await admit(session, runtime.settings.auth, attempt)
        if wait:
            message, seconds = retry_message(wait)
            raise TooManyRequests(message, retry_after=seconds)
    authenticator: Authenticator = request.state.authenticator
    try:
        async with session.begin():  # the user row stays locked (no rename or delete) while we read it
            who = as_user(authenticator, await authenticator.authenticate(session, body.auth.username,
                                                                          body.auth.password))
            ok = who is not None and who.name == name and decide(authenticator, who, exists=True).allowed
            user = await get_user(session, name) if ok else None
            if user is not None:
                await succeeded(session, attempt)
    except (LoginRefused, NotFound):  # a redirect login has no password to check; or no such user
        user = None
    if user is None:
        if runtime.settings.auth.login_throttle:
            async with session.begin():
                await failed(session, runtime.settings.auth, attempt)
        return None
    return Identity(user.id, user.name, user.admin, "cookie")  # acts as the user, as a login would


@router.post("/users/{name}/tokens")
async def post_token(name: str, request: Request, runtime: Runtime, session: DbSession) -> JSONResponse:
    body = await parse_body(request, TokenCreate, required=False)
    ident = await _credentials(request, runtime, session, body, name)
    if ident is None:
        await session.rollback()
        raise Forbidden("Missing or invalid credentials.")
    req = await load_requester(request, session, ident)
    await session.rollback()
    req.require("tokens", user=name)
    if body.scopes is not None and body.roles is not None:
        raise BadRequest("Specify only one of scopes or roles")
    limit = runtime.settings.api.token_expires_in_max_seconds
    if limit and (not body.expires_in or body.expires_in > limit):
        raise BadRequest(f"expires_in must be between 1 and {limit} seconds on this hub")
    cache: ScopeCache = request.state.scope_cache
    async with session.begin():
        user = await get_user(session, name)
        owner = await effective_scopes(session, Identity(user.id, user.name, user.admin, "cookie"), cache,
                                       runtime.settings.custom_subscopes)
        holders = [(f"user {name}", owner)]
        if not req.is_user(name) or req.ident.via == "token":
            holders.append(("the requester", req.scopes))
        try:
            wanted = body.scopes if body.scopes is not None else scopes_of_roles(body.roles or ["token"])
            scopes = grantable(wanted, name, holders)
        except ScopeError as exc:
            raise BadRequest(str(exc)) from None
        by = "" if req.is_user(name) else f" by {req.kind} {req.name}"
        note = body.note or f"Requested via api{by}"
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
        hashes = await revoke_token(session, runtime.settings.nats_namespace, user, token_id)
    runtime.relay.kick()
    cache: TokenCache = request.state.token_cache
    for hashed in hashes:
        cache.drop(hashed)  # other replicas: on the token.revoked events
    return Response(status_code=204)
