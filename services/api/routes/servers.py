"""Starting and stopping a user's default and named servers (`/users/{name}/server[s/{server_name}]`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from shared.errors import BadRequest, FleethubError, NotFound
from shared.http import read_json

from services.api.access import Requester
from services.api.deps import CurrentUser, DbSession, Runtime, Waiters
from services.api.queries import get_user, one_server_view
from services.api.schemas import ServerStop, parse_body, user_options_from
from services.api.servers import check_server_name, count_named, remove_server, start_server, stop_server

router = APIRouter(prefix="/hub/api")


def _plain(status: int) -> Response:
    return Response(status_code=status, media_type="text/plain")


async def _start(name: str, server_name: str, request: Request, req: Requester, runtime: Runtime,
                 session: DbSession, waiters: Waiters) -> Response:
    req.require("start:servers", user=name, server_name=server_name)
    settings = runtime.settings
    if server_name and not settings.api.allow_named_servers:
        raise BadRequest("Named servers are not enabled.")
    options = user_options_from(await read_json(request))
    async with session.begin():
        user = await get_user(session, name)
        if server_name and await one_server_view(session, user, server_name) is None:
            check_server_name(server_name)
            limit = settings.api.named_server_limit_per_user
            if limit and await count_named(session, user) >= limit:
                raise BadRequest(f"User {name} already has the maximum of {limit} named servers.  "
                                 "One must be deleted before a new server can be created")
        result = await start_server(session, settings, runtime.secret_key, user, server_name, options)
    runtime.relay.kick()
    outcome = await waiters.wait(result.spawn_id, {"ready", "failed", "stopped"}, settings.api.slow_spawn_timeout)
    if outcome is not None and outcome[0] == "ready":
        return _plain(201)
    if outcome is not None and outcome[0] == "failed":
        raise FleethubError(f"Spawn failed: {outcome[1]}", status=500)
    return _plain(202)


async def _stop(name: str, server_name: str, request: Request, req: Requester, runtime: Runtime,
                session: DbSession, waiters: Waiters) -> Response:
    req.require("delete:servers", user=name, server_name=server_name)
    body = await parse_body(request, ServerStop, required=False)
    if body.remove and not server_name:
        raise BadRequest("Cannot delete the default server")
    async with session.begin():
        user = await get_user(session, name)
        if server_name and await one_server_view(session, user, server_name) is None:
            raise NotFound(f"{name} has no server named '{server_name}'")
        spawn_id = await stop_server(session, runtime.settings, user, server_name)
        if body.remove:
            await remove_server(session, user, server_name)
    runtime.relay.kick()
    if spawn_id is None:
        return _plain(204)
    outcome = await waiters.wait(spawn_id, {"stopped", "failed"}, runtime.settings.api.slow_stop_timeout)
    return _plain(204 if outcome is not None else 202)


@router.post("/users/{name}/server")
@router.post("/users/{name}/servers/")  # an empty server name is the default server
async def start_default(name: str, request: Request, req: CurrentUser, runtime: Runtime, session: DbSession,
                        waiters: Waiters) -> Response:
    return await _start(name, "", request, req, runtime, session, waiters)


@router.post("/users/{name}/servers/{server_name}")
async def start_named(name: str, server_name: str, request: Request, req: CurrentUser, runtime: Runtime,
                      session: DbSession, waiters: Waiters) -> Response:
    return await _start(name, server_name, request, req, runtime, session, waiters)


@router.delete("/users/{name}/server")
@router.delete("/users/{name}/servers/")
async def stop_default(name: str, request: Request, req: CurrentUser, runtime: Runtime, session: DbSession,
                       waiters: Waiters) -> Response:
    return await _stop(name, "", request, req, runtime, session, waiters)


@router.delete("/users/{name}/servers/{server_name}")
async def stop_named(name: str, server_name: str, request: Request, req: CurrentUser, runtime: Runtime,
                     session: DbSession, waiters: Waiters) -> Response:
    return await _stop(name, server_name, request, req, runtime, session, waiters)
