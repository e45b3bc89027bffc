"""JupyterHub's deprecated `/hub/api/authorizations/...` lookups, kept for old services.

`GET /authorizations/token/{token}` answers the model of the token's owner (a user or a service);
`GET /authorizations/cookie/{name}/{value}` the user of a hub login cookie. Both need a token. The old
`POST /authorizations/token` (credentials for a token) was removed in JupyterHub 2.0 and is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from fleethub.services.api.access import Requester
from fleethub.services.api.deps import BaseUrl, Crypt, CurrentUser, DbSession
from fleethub.services.api.hub_services import SERVICE_FIELDS, get_service, service_model, service_roles
from fleethub.services.api.queries import get_user
from fleethub.services.api.routes.users import model_for
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.errors import NotFound
from fleethub.shared.identity import LOGIN_COOKIE, Identity, TokenCache, identity_from_cookie, identity_from_token

router = APIRouter(prefix="/hub/api")


async def _owner_model(session: DbSession, req: Requester, ident: Identity, crypt: AuthStateCrypt,
                       base_url: str) -> dict[str, Any]:
    if ident.kind == "service":
        row = await get_service(session, ident.name)
        fields = {f for scope, names in SERVICE_FIELDS.items() if req.can(scope, service=ident.name) for f in names}
        return service_model(row, (await service_roles(session, [row]))[row.id], fields | {"kind", "name"},
                             base_url=base_url)
    model = await model_for(session, req, await get_user(session, ident.name), crypt, base_url)
    return {"kind": "user", "name": ident.name, **model}  # the owner is always identified


@router.get("/authorizations/token/{token}")
async def token_owner(token: str, request: Request, req: CurrentUser, session: DbSession,
                      crypt: Crypt, base_url: BaseUrl) -> dict[str, Any]:
    if req.ident.via != "token":
        raise NotFound("Not found")  # JupyterHub only answers token-authenticated requests here
    cache: TokenCache = request.state.token_cache
    owner = await identity_from_token(session, token, cache) if 8 <= len(token) <= 1000 else None
    if owner is None:
        raise NotFound("No such token")
    return await _owner_model(session, req, owner, crypt, base_url)


@router.post("/authorizations/token")
async def removed_token_request() -> None:
    raise NotFound("Requesting tokens with credentials at this URL was removed in JupyterHub 2.0; "
                   "use POST /hub/api/users/{name}/tokens")


@router.get("/authorizations/cookie/{name}/{value}")
@router.get("/authorizations/cookie/{name}")
async def cookie_owner(name: str, request: Request, req: CurrentUser, session: DbSession, crypt: Crypt,
                       base_url: BaseUrl,
                       value: str | None = None) -> dict[str, Any]:
    value = value if value is not None else request.cookies.get(name)
    owner = await identity_from_cookie(session, value) if name == LOGIN_COOKIE else None
    if req.ident.via != "token" or owner is None:
        raise NotFound("No such cookie")
    return await _owner_model(session, req, owner, crypt, base_url)
