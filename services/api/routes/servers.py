"""Starting and stopping a user's default and named servers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from shared.errors import BadRequest, FleethubError, NotFound
from shared.identity import Identity

from services.api.access import require_user_access
from services.api.deps import CurrentIdentity, DbSession, RuntimeDep, WaitersDep
from services.api.queries import get_user, one_server_view
from services.api.schemas import read_json, user_options_from
from services.api.servers import check_server_name, count_named, remove_server, start_server, stop_server

router = APIRouter(prefix="/hub/api")


async def _start(name: str, server_name: str, request: Request, ident: Identity, runtime: RuntimeDep,
                 session: DbSession, waiters: WaitersDep) -> Response:
    require_user_access(ident, name, "servers")
    options = user_options_from(await read_json(request))
    settings = runtime.settings
    async with session.begin():
        user = await get_user(session, name)
        if server_name:
            if not settings.api.allow_named_servers:
                raise BadRequest("Named servers are not enabled.")
            if await one_server_view(session, user, server_name) is None:
                check_server_name(server_name)
                limit = settings.api.named_server_limit_per_user
                if limit and await count_named(session, user) >= limit:
                    raise BadRequest(f"User {name} already has the maximum of {limit} named servers.  "
                                     "One must be deleted before a new server can be created")
        result = await start_server(session, settings, runtime.secret_key, user, server_name, options)
    runtime.relay.kick()
    outcome = await waiters.wait(result.spawn_id, {"ready", "failed", "stopped"}, settings.api.slow_spawn_timeout)
    if outcome is not None and outcome[0] == "ready":
        return Response(status_code=201, media_type="text/plain")
    if outcome is not None and outcome[0] == "failed":
        raise FleethubError(f"Spawn failed: {outcome[1]}", status=500)
    return Response(status_code=202, media_type="text/plain")


async def _stop(name: str, server_name: str, request: Request, ident: Identity, runtime: RuntimeDep,
                session: DbSession, waiters: WaitersDep) -> Response:
    require_user_access(ident, name, "servers")
    body = await read_json(request)
    remove = bool(body.get("remove")) if isinstance(body, dict) else False
    if remove and not server_name:
        raise BadRequest("Cannot delete the default server")
    async with session.begin():
        user = await get_user(session, name)
        if server_name and await one_server_view(session, user, server_name) is None:
            raise NotFound(f"{name} has no server named '{server_name}'")
        spawn_id = await stop_server(session, runtime.settings, user, server_name)
        if remove:
            await remove_server(session, user, server_name)
    runtime.relay.kick()
    if spawn_id is None:
        return Response(status_code=204)
    outcome = await waiters.wait(spawn_id, {"stopped", "failed"}, runtime.settings.api.slow_stop_timeout)
    return Response(status_code=204 if outcome is not None else 202)


@router.post("/users/{name}/server")
async def start_default(name: str, request: Request, ident: CurrentIdentity, runtime: RuntimeDep,
                        session: DbSession, waiters: WaitersDep) -> Response:
    return await _start(name, "", request, ident, runtime, session, waiters)


@router.post("/users/{name}/servers/{server_name}")
async def start_named(name: str, server_name: str, request: Request, ident: CurrentIdentity, runtime: RuntimeDep,
                      session: DbSession, waiters: WaitersDep) -> Response:
    return await _start(name, server_name, request, ident, runtime, session, waiters)


@router.delete("/users/{name}/server")
async def stop_default(name: str, request: Request, ident: CurrentIdentity, runtime: RuntimeDep,
                       session: DbSession, waiters: WaitersDep) -> Response:
    return await _stop(name, "", request, ident, runtime, session, waiters)


@router.delete("/users/{name}/servers/{server_name}")
async def stop_named(name: str, server_name: str, request: Request, ident: CurrentIdentity, runtime: RuntimeDep,
                     session: DbSession, waiters: WaitersDep) -> Response:
    return await _stop(name, server_name, request, ident, runtime, session, waiters)
