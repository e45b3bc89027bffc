"""`/hub/api/groups`: groups, their members and properties."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fleethub.services.api.access import Requester
from fleethub.services.api.deps import CurrentUser, DbSession, Runtime
from fleethub.services.api.groups import (
    READ_GROUP_SCOPES,
    GroupCreate,
    GroupsCreate,
    GroupUsers,
    GroupView,
    add_members,
    check_group_name,
    check_properties,
    create_groups,
    delete_group,
    get_group,
    group_model,
    group_views,
    list_groups,
    remove_members,
    set_properties,
)
from fleethub.services.api.paging import page_of, page_response
from fleethub.services.api.schemas import parse_body
from fleethub.shared.errors import BadRequest, Forbidden
from fleethub.shared.http import read_json
from fleethub.shared.settings import ServiceSettings

router = APIRouter(prefix="/hub/api")


def model_for(req: Requester, view: GroupView) -> dict[str, Any] | None:
    """The Group model of one group as `req` may see it."""
    return group_model(view, lambda scope: req.can(scope, group=view.group.name))


@router.get("/groups")
async def get_groups(request: Request, req: CurrentUser, session: DbSession, offset: int = 0,
                     limit: int | None = None) -> Response:
    visible = req.names_visible("list:groups", "group")
    if visible is not None and not visible:
        raise Forbidden("Action is not authorized with current scopes; requires any of ['list:groups']")
    page = page_of(request, offset, limit)
    views, total = await list_groups(session, frozenset(visible) if visible is not None else None, page.offset,
                                     page.limit)
    return page_response(request, page, [m for v in views if (m := model_for(req, v))], total)


MANAGED = "Group membership is managed by the authenticator (auth.manage_groups)"


def _unmanaged(settings: ServiceSettings, users: list[str] | None = None) -> None:
    """Refuse a change of memberships while the authenticator is their source of truth (`auth.manage_groups`):
    adding or removing members, or creating a group with members. Groups themselves may still be made
    (for roles and shares, before anyone's login brings members) and deleted. `users`: the members a new
    group would get; None: a change of an existing group's members."""
    if settings.auth.manage_groups and (users is None or users):
        raise BadRequest(MANAGED)


@router.post("/groups", status_code=201)
async def post_groups(request: Request, req: CurrentUser, runtime: Runtime, session: DbSession) -> list[dict[str, Any]]:
    req.require("admin:groups")  # hub-wide: a filtered admin:groups may not create arbitrary groups
    body = await parse_body(request, GroupsCreate, required=True)
    _unmanaged(runtime.settings, body.users or [])
    async with session.begin():
        created = await create_groups(session, runtime.settings.nats_namespace, body.groups, body.users)
    runtime.relay.kick()
    return [model_for(req, v) or {} for v in created]


@router.get("/groups/{name}")
async def get_one(name: str, req: CurrentUser, session: DbSession) -> dict[str, Any]:
    req.require(*READ_GROUP_SCOPES, group=name)
    group = await get_group(session, check_group_name(name))
    (view,) = await group_views(session, [group])
    return model_for(req, view) or {}


@router.post("/groups/{name}", status_code=201)
async def post_one(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                   session: DbSession) -> dict[str, Any]:
    req.require("admin:groups", group=name)
    check_group_name(name)
    body = await parse_body(request, GroupCreate, required=False)
    _unmanaged(runtime.settings, body.users or [])
    async with session.begin():
        (created,) = await create_groups(session, runtime.settings.nats_namespace, [name], body.users)
    runtime.relay.kick()
    return model_for(req, created) or {}


@router.delete("/groups/{name}", status_code=204)
async def delete_one(name: str, req: CurrentUser, runtime: Runtime, session: DbSession) -> Response:
    req.require("delete:groups", group=name)
    async with session.begin():
        await delete_group(session, runtime.settings.nats_namespace, check_group_name(name))
    runtime.relay.kick()
    return Response(status_code=204)


async def _members_body(request: Request, verb: str) -> list[str]:
    body = await parse_body(request, GroupUsers, required=True)
    if body.users is None:
        raise BadRequest(f"Must specify users to {verb}")
    return body.users


@router.api_route("/groups/{name}/users", methods=["POST", "DELETE"])
async def change_members(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                         session: DbSession) -> dict[str, Any]:
    """POST adds the body's users to the group, DELETE removes them; both answer the Group model."""
    req.require("groups", group=name)
    check_group_name(name)
    _unmanaged(runtime.settings)
    adding = request.method == "POST"
    users = await _members_body(request, "add" if adding else "delete")
    change = add_members if adding else remove_members
    async with session.begin():
        view = await change(session, runtime.settings.nats_namespace, name, users)
    runtime.relay.kick()
    return model_for(req, view) or {}


@router.put("/groups/{name}/properties")
async def put_properties(name: str, request: Request, req: CurrentUser, runtime: Runtime,
                         session: DbSession) -> dict[str, Any]:
    req.require("groups", group=name)
    check_group_name(name)
    properties = check_properties(await read_json(request))
    async with session.begin():
        view = await set_properties(session, runtime.settings.nats_namespace, name, properties)
    runtime.relay.kick()
    return model_for(req, view) or {}
