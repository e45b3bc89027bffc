"""`GET /hub/api/proxy`: the route table in JupyterHub's shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from nats.js.errors import NoKeysError

from shared.events import Route

from services.api.access import require_admin
from services.api.deps import CurrentIdentity, RuntimeDep

router = APIRouter(prefix="/hub/api")


@router.get("/proxy")
async def proxy_table(ident: CurrentIdentity, runtime: RuntimeDep) -> dict[str, Any]:
    require_admin(ident, "proxy")
    kv = await runtime.bus.routes()
    try:
        keys = await kv.keys()
    except NoKeysError:
        keys = []
    table: dict[str, Any] = {}
    for key in sorted(keys):
        entry = await kv.get(key)
        if entry is None or not entry.value:
            continue
        route = Route.model_validate_json(entry.value)
        table[route.routespec] = {"routespec": route.routespec, "target": route.target, "data": route.data}
    return table
