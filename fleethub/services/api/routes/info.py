"""`GET /hub/api/` (version), `/hub/api/info`, health probes."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictBool
from sqlalchemy import select

from fleethub.services.api.deps import CurrentUser, DbSession, Runtime
from fleethub.services.api.schemas import parse_body
from fleethub.services.api.servers import stop_server
from fleethub.shared.db.models import Server, User
from fleethub.shared.events import HubShutdown
from fleethub.shared.health import health_report
from fleethub.shared.http import JUPYTERHUB_COMPAT_VERSION
from fleethub.shared.lifecycle import DesiredState
from fleethub.shared.outbox import enqueue

router = APIRouter()


def _fleethub_version() -> str:
    try:
        return dist_version("fleethub")
    except PackageNotFoundError:
        return "unknown"


@router.get("/hub/api")
@router.get("/hub/api/")
async def version() -> Response:
    return JSONResponse({"version": JUPYTERHUB_COMPAT_VERSION}, headers={"Access-Control-Allow-Origin": "*"})


@router.get("/hub/api/info")
async def info(req: CurrentUser, runtime: Runtime) -> dict[str, Any]:
    req.require("read:hub")
    settings = runtime.settings
    ours = _fleethub_version()
    return {
        "version": JUPYTERHUB_COMPAT_VERSION,
        "fleethub_version": ours,
        "python": sys.version,
        "sys_executable": sys.executable,
        "spawner": {"class": f"fleethub.spawner.{settings.spawner.backend}", "version": ours},
        "authenticator": {"class": f"fleethub.auth.{settings.auth.authenticator}", "version": ours},
    }


@router.get("/hub/health")
@router.get("/hub/api/health")
async def health(runtime: Runtime) -> dict[str, Any]:
    """200 while this replica serves; the body says which dependency is away (`fleethub.shared.health`)."""
    return await health_report(runtime)


class ShutdownRequest(BaseModel):
    """`POST /hub/api/shutdown`: both default to true, as JupyterHub's cleanup settings do."""

    model_config = ConfigDict(extra="ignore")

    servers: StrictBool = True
    proxy: StrictBool = True


@router.post("/hub/api/shutdown")
async def shutdown(request: Request, req: CurrentUser, runtime: Runtime, session: DbSession) -> Response:
    """Stop the hub: every service process exits (the proxies too with `proxy`), after telling every
    user server to stop (with `servers`). Under `fleethub up` the whole hub then exits."""
    req.require("shutdown")
    body = await parse_body(request, ShutdownRequest, required=False)
    settings = runtime.settings
    async with session.begin():
        if body.servers:
            rows = await session.execute(select(User, Server.name).join(Server, Server.user_id == User.id)
                                         .where(Server.desired == DesiredState.RUNNING))
            announcer = runtime.announcer
            for user, server_name in rows.all():
                await stop_server(session, user, server_name, reason="shutdown", announcer=announcer)
        enqueue(session, HubShutdown(servers=body.servers, proxy=body.proxy), settings.nats_namespace, origin="api")
    runtime.relay.kick()
    return JSONResponse({"message": "Shutting down Hub"}, status_code=202)
