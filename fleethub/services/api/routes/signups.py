"""`/hub/api/signups`: sign-ups waiting for an admin's approval (`[auth.password] enable_signup`); a fleethub
extension of JupyterHub's API (NativeAuthenticator's authorization area, as REST)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.deps import CurrentUser, DbSession, Runtime
from fleethub.services.api.queries import get_user
from fleethub.services.api.signups import reject_signup
from fleethub.shared.accounts import approve, is_pending, pending_signups
from fleethub.shared.db.models import User
from fleethub.shared.errors import NotFound
from fleethub.shared.http import iso

router = APIRouter(prefix="/hub/api")


async def _pending(session: AsyncSession, name: str) -> User:
    user = await get_user(session, name)
    if not await is_pending(session, user.id):
        raise NotFound(f"No sign-up of {name} waits for approval")
    return user


@router.get("/signups")
async def list_signups(req: CurrentUser, session: DbSession) -> list[dict[str, Any]]:
    req.require("admin:users")
    async with session.begin():
        pending = await pending_signups(session)
    return [{"name": p.name, "created": iso(p.created)} for p in pending]


@router.post("/signups/{name}")
async def approve_signup(name: str, req: CurrentUser, session: DbSession) -> dict[str, Any]:
    req.require("admin:users", user=name)
    async with session.begin():
        await approve(session, (await _pending(session, name)).id)
    return {"name": name, "approved": True}


@router.delete("/signups/{name}", status_code=204)
async def reject(name: str, request: Request, req: CurrentUser, runtime: Runtime, session: DbSession) -> Response:
    req.require("admin:users", user=name)
    async with session.begin():
        user = await _pending(session, name)
        deleted = await reject_signup(session, runtime.settings, user, announcer=runtime.announcer)
    if deleted:
        runtime.relay.kick()
        request.state.token_cache.drop_user_named(name)
        request.state.scope_cache.drop("user", [name])
    return Response(status_code=204)
