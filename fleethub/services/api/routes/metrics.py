"""`GET /hub/metrics`: this api replica's Prometheus metrics, for holders of `read:metrics` (as JupyterHub's
with `authenticate_prometheus`, its default: 403 without the scope)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from fleethub.services.api.deps import CurrentUser, Runtime
from fleethub.shared.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/hub/metrics")
async def metrics(req: CurrentUser, runtime: Runtime) -> Response:
    req.require("read:metrics")
    return Response(await runtime.metrics.exposition(), media_type=CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})
