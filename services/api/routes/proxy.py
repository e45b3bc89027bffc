"""`GET /hub/api/proxy`: the route table in JupyterHub's shape `{routespec: {routespec, target, data}}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shared.events import Route

from services.api.deps import CurrentUser, Runtime

router = APIRouter(prefix="/hub/api")


@router.get("/proxy")
async def proxy_table(req: CurrentUser, runtime: Runtime) -> dict[str, Any]:
    req.require("proxy")
    table: dict[str, Any] = {}
    for _, value in sorted((await runtime.bus.routes_snapshot()).items()):
        route = Route.model_validate_json(value)
        table[route.routespec] = {"routespec": route.routespec, "target": route.target, "data": route.data}
    return table
