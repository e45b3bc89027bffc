"""`GET /hub/api/` (version), health probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from shared.http import JUPYTERHUB_COMPAT_VERSION

router = APIRouter()


@router.get("/hub/api")
@router.get("/hub/api/")
async def version() -> Response:
    return JSONResponse({"version": JUPYTERHUB_COMPAT_VERSION}, headers={"Access-Control-Allow-Origin": "*"})


@router.get("/hub/health")
@router.get("/hub/api/health")
async def health() -> Response:
    return Response(status_code=200)
