"""Services as the API shows them, and external services created or removed at run time."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import CONFIG_TOKEN_KIND, ApiToken, HubServiceRow, Role, ServiceRole
from fleethub.shared.errors import BadRequest, Conflict, NotFound
from fleethub.shared.names import storable
from fleethub.shared.rbac import access_changed
from fleethub.shared.security import hash_token
from fleethub.shared.settings import HubService, ServiceSettings

# which fields of the Service model each scope reveals
SERVICE_FIELDS: dict[str, tuple[str, ...]] = {
    "read:services": ("kind", "name", "admin", "roles", "url", "prefix", "command", "pid", "info", "display"),
    "read:services:name": ("kind", "name", "admin"),
    "read:roles:services": ("kind", "name", "roles", "admin"),
}
READ_SERVICE_SCOPES = tuple(SERVICE_FIELDS)


async def service_roles(session: AsyncSession, rows: list[HubServiceRow]) -> dict[int, list[str]]:
    """Role names of services (one query); `admin` first for admin services."""
    out: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        if row.admin:
            out[row.id].append("admin")
    if rows:
        found = await session.execute(
            select(ServiceRole.service_id, Role.name).join(Role, Role.id == ServiceRole.role_id)
            .where(ServiceRole.service_id.in_([r.id for r in rows])).order_by(Role.name))
        for sid, name in found.all():
            out[sid].append(name)
    return out


def service_model(row: HubServiceRow, roles: list[str], fields: set[str], *, base_url: str) -> dict[str, Any]:
    """The Service model, limited to `fields` (its prefix under `base_url`)."""
    full = {
        "kind": "service",
        "name": row.name,
        "admin": row.admin,
        "roles": roles,
        "url": row.url or "",
        "prefix": f"{base_url}services/{row.name}/" if row.url else "",
        "command": [],
        "pid": 0,
        "info": row.info or {},
        "display": row.display,
    }
    return {k: v for k, v in full.items() if k in fields}


async def get_service(session: AsyncSession, name: str) -> HubServiceRow:
    """The service `name`.

    Raises:
        NotFound: no such service.
    """
    row = None
    if storable(name):  # a NUL from the path (/services/a%00b) names no service
        row = (await session.execute(select(HubServiceRow).where(HubServiceRow.name == name))).scalar()
    if row is None:
        raise NotFound(f"No such service: {name}")
    return row


class ServiceCreate(BaseModel):
    """`POST /services/{name}`: an external service (one the hub does not run)."""

    model_config = ConfigDict(extra="forbid")

    url: StrictStr | None = None
    api_token: StrictStr | None = Field(None, min_length=8, max_length=1000)
    oauth_client_id: StrictStr | None = Field(None, max_length=1000)
    oauth_redirect_uri: StrictStr | None = Field(None, max_length=2000)
    oauth_no_confirm: StrictBool = False
    oauth_client_allowed_scopes: list[StrictStr] | None = None
    oauth_roles: list[StrictStr] | None = None
    display: StrictBool = True
    info: dict[str, Any] = Field(default_factory=dict)
    admin: StrictBool = False
    command: list[StrictStr] | StrictStr | None = None
    name: StrictStr | None = None  # the path names the service; a body name is ignored, as JupyterHub does

    @field_validator("command")
    @classmethod
    def _unmanaged(cls, value: object) -> object:
        if value:
            raise ValueError("a service with a command can not be created at run time (the hub would run it)")
        return value


async def create_service(session: AsyncSession, settings: ServiceSettings, name: str,
                         body: ServiceCreate) -> HubServiceRow:
    """Create an external service (and its API token) in the caller's transaction. With an `api_token` it
    is an OAuth client too (the token is its secret).

    Raises:
        BadRequest: an invalid name, url, OAuth client id, allowed scope or OAuth role.
        Conflict: the service exists.
    """
    try:
        spec = HubService(name=name, url=body.url, oauth_client_id=body.oauth_client_id,
                          oauth_redirect_uri=body.oauth_redirect_uri, oauth_no_confirm=body.oauth_no_confirm,
                          oauth_client_allowed_scopes=body.oauth_client_allowed_scopes or [],
                          oauth_roles=body.oauth_roles or [], display=body.display, info=body.info, admin=body.admin)
    except ValueError as exc:
        raise BadRequest(f"Invalid service {name[:64]!r}: {str(exc).splitlines()[-1].strip()}") from None
    problem = settings.oauth_scopes_problem(spec)
    if problem:
        raise BadRequest(problem[:300])
    oauth = body.api_token is not None
    allowed = settings.oauth_allowed_scopes(spec)
    row = (await session.execute(insert(HubServiceRow).values(
        name=name, from_config=False, admin=body.admin, url=spec.url,
        oauth_client_id=spec.client_id if oauth else None, oauth_redirect_uri=spec.redirect_uri if oauth else None,
        oauth_no_confirm=body.oauth_no_confirm, oauth_client_allowed_scopes=allowed, display=body.display,
        info=body.info,
    ).on_conflict_do_nothing(index_elements=["name"]).returning(HubServiceRow))).scalar()
    if row is None:
        raise Conflict(f"Service {name} already exists")
    if oauth and (await session.execute(select(HubServiceRow.id).where(
            HubServiceRow.oauth_client_id == spec.client_id, HubServiceRow.id != row.id))).first() is not None:
        raise BadRequest(f"oauth_client_id {spec.client_id[:64]!r} is already in use")  # (rolls the insert back)
    if body.api_token is not None:
        hashed = hash_token(body.api_token)
        if (await session.execute(select(ApiToken.id).where(ApiToken.hashed == hashed))).first() is not None:
            raise BadRequest("api_token is already in use; choose another")
        session.add(ApiToken(service_id=row.id, hashed=hashed, kind=CONFIG_TOKEN_KIND, scopes=["inherit"],
                             note=f"api_token of service {name}"))
    access_changed(session, settings.nats_namespace, services=[name])
    return row


async def remove_service(session: AsyncSession, namespace: str, row: HubServiceRow) -> None:
    """Delete a runtime service and its tokens (the caller checked it is not from the config)."""
    await session.execute(delete(HubServiceRow).where(HubServiceRow.id == row.id))
    access_changed(session, namespace, services=[row.name])
