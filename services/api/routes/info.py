"""`GET /hub/api/` (version), `/hub/api/info`, health probes."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from shared.http import JUPYTERHUB_COMPAT_VERSION

from services.api.deps import CurrentUser, Runtime

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
async def health() -> Response:
    return Response(status_code=200)
