"""`POST /hub/api/users/{name}/activity`: activity reports of single-user servers (contract §c.6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select, update

from shared.db.models import Server, User
from shared.errors import BadRequest, Forbidden, NotFound
from shared.events import utcnow

from services.api.deps import CurrentIdentity, DbSession
from services.api.queries import get_user
from services.api.schemas import read_json

router = APIRouter(prefix="/hub/api")
MAX_FUTURE = timedelta(minutes=59)


def _parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: last_activity must be an ISO 8601 timestamp")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{where}: invalid timestamp {value[:64]!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    if ts > utcnow() + MAX_FUTURE:
        raise BadRequest(f"{where}: last_activity is in the future")
    return ts


@router.post("/users/{name}/activity")
async def post_activity(name: str, request: Request, ident: CurrentIdentity, session: DbSession) -> Response:
    allowed = ident.admin or ident.name == name
    if ident.token_kind == "server":
        allowed = ident.name == name and f"users:activity!user={name}" in ident.token_scopes
    if not allowed:
        if ident.name != name:
            raise NotFound("No access to resources or resources not found")
        raise Forbidden("Action is not authorized with current scopes; requires any of ['users:activity']")
    body = await read_json(request)
    if not isinstance(body, dict) or not ({"servers", "last_activity"} & body.keys()):
        raise BadRequest("body must be an object with 'servers' and/or 'last_activity'")
    servers = body.get("servers") or {}
    if not isinstance(servers, dict):
        raise BadRequest("servers must be an object")
    user_time = _parse_time(body["last_activity"], "last_activity") if "last_activity" in body else None
    async with session.begin():
        user = await get_user(session, name)
        for server_name, info in servers.items():
            if not isinstance(info, dict) or "last_activity" not in info:
                raise BadRequest(f"servers.{server_name}: needs last_activity")
            ts = _parse_time(info["last_activity"], f"servers.{server_name}")
            found = (await session.execute(
                select(Server.id).where(Server.user_id == user.id, Server.name == server_name)
            )).scalar()
            if found is None:
                raise BadRequest(f"No such server '{server_name}' for user {name}")
            await session.execute(
                update(Server).where(Server.id == found, (Server.last_activity.is_(None)) | (Server.last_activity < ts))
                .values(last_activity=ts)
            )
            user_time = max(user_time, ts) if user_time else ts
        if user_time is not None:
            await session.execute(
                update(User).where(User.id == user.id, (User.last_activity.is_(None)) | (User.last_activity < user_time))
                .values(last_activity=user_time)
            )
    return Response(status_code=200)
