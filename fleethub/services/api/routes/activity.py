"""`POST /hub/api/users/{name}/activity`: activity reports of single-user servers (contract §c.6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fleethub.services.api.activity import record_report
from fleethub.services.api.deps import CurrentUser, DbSession
from fleethub.services.api.queries import get_user
from fleethub.shared.errors import BadRequest
from fleethub.shared.events import utcnow
from fleethub.shared.http import read_json

router = APIRouter(prefix="/hub/api")
MAX_FUTURE = timedelta(minutes=59)


def _parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: last_activity must be an ISO 8601 timestamp")
    try:
        ts = datetime.fromisoformat(value)  # with its `Z`, since Python 3.11
    except ValueError:
        raise BadRequest(f"{where}: invalid timestamp {value[:64]!r}") from None
    try:  # in UTC, as stored: year 1 at +01:00 is before year 1 in UTC, which no database holds
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"{where}: timestamp out of range {value[:64]!r}") from None
    if ts > utcnow() + MAX_FUTURE:
        raise BadRequest(f"{where}: last_activity is in the future")
    return ts


def _server_times(raw: Any) -> dict[str, datetime]:
    if not isinstance(raw, dict):
        raise BadRequest("servers must be an object")
    out = {}
    for name, info in raw.items():
        where = f"servers.{name[:64]}"
        if not isinstance(info, dict) or "last_activity" not in info:
            raise BadRequest(f"{where}: needs last_activity")
        out[name] = _parse_time(info["last_activity"], where)
    return out


@router.post("/users/{name}/activity")
async def post_activity(name: str, request: Request, req: CurrentUser, session: DbSession) -> Response:
    req.require("users:activity", user=name)
    body = await read_json(request)
    if not isinstance(body, dict) or not ({"servers", "last_activity"} & body.keys()):
        raise BadRequest("body must be an object with 'servers' and/or 'last_activity'")
    raw = body.get("servers")
    servers = _server_times({} if raw is None else raw)
    user_time = _parse_time(body["last_activity"], "last_activity") if "last_activity" in body else None
    async with session.begin():
        user = await get_user(session, name)
        await record_report(session, user, user_time, servers)
    return Response(status_code=200)
