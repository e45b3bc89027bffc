"""`/hub/api/services`: configured and runtime external services."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from fleethub.services.api.access import Requester
from fleethub.services.api.deps import BaseUrl, CurrentUser, DbSession, Runtime
from fleethub.services.api.hub_services import (
    READ_SERVICE_SCOPES,
    SERVICE_FIELDS,
    ServiceCreate,
    create_service,
    get_service,
    remove_service,
    service_model,
    service_roles,
)
from fleethub.services.api.schemas import parse_body
from fleethub.shared.db.models import HubServiceRow
from fleethub.shared.errors import BadRequest, FleethubError, Forbidden
from fleethub.shared.identity import TokenCache
from fleethub.shared.scopes import ADMIN_ROLE

router = APIRouter(prefix="/hub/api")


def _fields(req: Requester, name: str) -> set[str]:
    return {f for scope, names in SERVICE_FIELDS.items() if req.can(scope, service=name) for f in names}


@router.get("/services")
async def list_services(req: CurrentUser, session: DbSession, base_url: BaseUrl) -> dict[str, Any]:
    # JupyterHub answers an object keyed by name, not the spec's array, and does not paginate
    visible = req.names_visible("list:services", "service")
    if visible is not None and not visible:
        raise Forbidden("Action is not authorized with current scopes; requires any of ['list:services']")
    stmt = select(HubServiceRow).order_by(HubServiceRow.name)
    if visible is not None:
        stmt = stmt.where(HubServiceRow.name.in_(sorted(visible)))
    rows = list((await session.execute(stmt)).scalars())
    roles = await service_roles(session, rows)
    out: dict[str, Any] = {}
    for row in rows:
        fields = _fields(req, row.name) | {"kind", "name"}
        out[row.name] = service_model(row, roles[row.id], fields, base_url=base_url)
    return out


@router.get("/services/{name}")
async def read_service(name: str, req: CurrentUser, session: DbSession, base_url: BaseUrl) -> dict[str, Any]:
    req.require(*READ_SERVICE_SCOPES, service=name)
    row = await get_service(session, name)
    return service_model(row, (await service_roles(session, [row]))[row.id], _fields(req, name), base_url=base_url)


@router.post("/services/{name}")
async def add_service(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                      session: DbSession) -> Response:
    req.require("admin:services", service=name)
    body = await parse_body(request, ServiceCreate, required=True)
    if body.admin and not all(req.can(scope) for scope in ADMIN_ROLE):
        raise BadRequest("Not assigning the admin role to a service: the requester is not an admin")
    async with session.begin():
        row = await create_service(session, runtime.settings, name, body)
        roles = (await service_roles(session, [row]))[row.id]
    runtime.relay.kick()
    return JSONResponse(service_model(row, roles, set(SERVICE_FIELDS["read:services"]),
                                      base_url=runtime.settings.base_url), status_code=201)


@router.delete("/services/{name}")
async def delete_service(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                         session: DbSession) -> Response:
    req.require("admin:services", service=name)
    async with session.begin():
        row = await get_service(session, name)
        if row.from_config:
            raise FleethubError(f"Service {name} is not modifiable at runtime", status=405)
        await remove_service(session, runtime.settings.nats_namespace, row)
    runtime.relay.kick()
    cache: TokenCache = request.state.token_cache
    cache.drop_user_named(name, kind="service")  # other replicas: on the access.changed event
    return Response(status_code=200)
