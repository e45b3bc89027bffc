"""`/hub/api/proxy`: the route table in JupyterHub's shape `{routespec: {routespec, target, data}}`,
a forced resync (POST) and JupyterHub's PATCH (which re-syncs; fleethub's nodes need no new address)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from fleethub.services.api.deps import CurrentUser, DbSession, Runtime
from fleethub.services.api.paging import next_page, page_of
from fleethub.services.api.resync import resync_routes
from fleethub.services.api.schemas import parse_body
from fleethub.shared.http import require_bus

router = APIRouter(prefix="/hub/api")


class ProxyPatch(BaseModel):
    """`PATCH /proxy`: the fields JupyterHub accepts (spec: ip/port/protocol; code: api_url/auth_token)."""

    model_config = ConfigDict(extra="forbid")

    ip: StrictStr | None = None
    port: StrictInt | None = Field(None, ge=1, le=65535)
    protocol: StrictStr | None = None
    api_url: StrictStr | None = None
    auth_token: StrictStr | None = None


@router.get("/proxy")
async def proxy_table(request: Request, req: CurrentUser, runtime: Runtime, offset: int = 0,
                      limit: int | None = None) -> Response:
    req.require("proxy")
    require_bus(runtime)  # the table is the routes bucket
    routes = sorted((await runtime.bus.routes.snapshot()).values(), key=lambda r: r.routespec)
    page = page_of(request, offset, limit)
    if not page.paginated and limit is None and offset == 0:
        chosen = routes  # JupyterHub's unpaginated answer is the whole table
    else:
        chosen = routes[page.offset:page.offset + page.limit]
    table = {r.routespec: {"routespec": r.routespec, "target": r.target, "data": r.data} for r in chosen}
    if not page.paginated:
        return JSONResponse(table)
    total = len(routes)
    nxt = next_page(request, page, total)
    return JSONResponse({"items": table, "_pagination": {"offset": page.offset, "limit": page.limit,
                                                         "total": total, "next": nxt}})


@router.post("/proxy")
async def proxy_resync(req: CurrentUser, runtime: Runtime, session: DbSession) -> dict[str, Any]:
    req.require("proxy")
    put, deleted = await resync_routes(runtime, session)
    return {"put": put, "deleted": deleted}


@router.patch("/proxy")
async def proxy_patch(request: Request, req: CurrentUser, runtime: Runtime, session: DbSession) -> dict[str, Any]:
    req.require("proxy")
    await parse_body(request, ProxyPatch, required=False)
    put, deleted = await resync_routes(runtime, session)
    return {"put": put, "deleted": deleted}
