"""A user's default and named servers (`/users/{name}/server[s/{server_name}]`): read, create, edit,
start, stop, follow a spawn's progress; and the deprecated `admin-access`.

Each operation is one handler of the server name, registered from one table (`SERVER_ROUTES`) on the
default server's paths and on the named servers' paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from fleethub.services.api.access import Requester
from fleethub.services.api.deps import CurrentUser, Runtime, Waiters
from fleethub.services.api.models import AnyView, ServerView, server_model
from fleethub.services.api.progress import ProgressStream, open_progress
from fleethub.services.api.queries import get_user, one_server_view
from fleethub.services.api.refresh import refresh_before_spawn
from fleethub.services.api.schemas import ServerStop, parse_body
from fleethub.services.api.servers import (
    ServerRequest,
    check_display_name,
    check_named_server,
    create_server,
    lock_user,
    remove_server,
    server_patch_from,
    server_request_from,
    start_server,
    stop_server,
    update_server,
)
from fleethub.services.api.waiters import Outcome
from fleethub.shared.db.models import Server, User
from fleethub.shared.errors import BadRequest, Conflict, FleethubError, NotFound
from fleethub.shared.faults import fault
from fleethub.shared.http import DbSession, read_json
from fleethub.shared.lifecycle import DesiredState

log = logging.getLogger(__name__)
router = APIRouter(prefix="/hub/api")


async def _server_name(request: Request) -> str:
    # async: FastAPI would run a plain function in its thread pool
    return str(request.path_params.get("server_name", ""))


ServerName = Annotated[str, Depends(_server_name)]
"""The server a path names: `{server_name}`, or the default server ("") on the default server's paths."""


def _plain(status: int) -> Response:
    return Response(status_code=status, media_type="text/plain")


def _model(req: Requester, user: User, view: AnyView, base_url: str, status: int = 200) -> JSONResponse:
    with_state = req.can("admin:server_state", user.name, view.server.name)
    return JSONResponse(server_model(user, view, with_state=with_state, base_url=base_url), status_code=status)


# --- read, create, edit ---------------------------------------------------------------------------

async def _get(name: str, server_name: ServerName, req: CurrentUser, session: DbSession, runtime: Runtime) -> Response:
    req.require("read:servers", user=name, server_name=server_name)
    async with session.begin():
        user = await get_user(session, name)
        view = await one_server_view(session, user, server_name)
        if view is None and server_name:
            raise NotFound(f"{name} has no server named '{server_name}'")
        if view is None:  # every user has a default server, stopped until its first start
            view = ServerView(Server(user_id=user.id, name="", desired=DesiredState.STOPPED, user_options={}), None)
        return _model(req, user, view, runtime.settings.base_url)


async def _create(name: str, server_name: ServerName, request: Request, req: CurrentUser, runtime: Runtime,
                  session: DbSession) -> Response:
    req.require("start:servers", user=name, server_name=server_name)
    body = server_request_from(await read_json(request))
    async with session.begin():
        user = await lock_user(session, name)
        if not server_name:
            raise Conflict(f"User {name} already has a default server")
        if await one_server_view(session, user, server_name) is not None:
            raise Conflict(f"User {name} already has server {server_name}")
        await check_named_server(session, runtime.settings, user, server_name, new=True)
        body = ServerRequest(check_display_name(body.display_name or server_name), body.user_options)
        return _model(req, user, await create_server(session, user, server_name, body), runtime.settings.base_url,
                      status=201)


async def _patch(name: str, server_name: ServerName, request: Request, req: CurrentUser, runtime: Runtime,
                 session: DbSession) -> Response:
    req.require("start:servers", user=name, server_name=server_name)
    patch = server_patch_from(await read_json(request))
    async with session.begin():
        user = await lock_user(session, name)
        view = await update_server(session, runtime.settings, user, server_name, patch)
        model = _model(req, user, view, runtime.settings.base_url)
    runtime.relay.kick()  # a rename announces whose scopes changed (shares follow it)
    return model


# --- start, stop ----------------------------------------------------------------------------------

async def _start(name: str, server_name: ServerName, request: Request, req: CurrentUser, runtime: Runtime,
                 session: DbSession, waiters: Waiters) -> Response:
    req.require("start:servers", user=name, server_name=server_name)
    settings = runtime.settings
    if server_name and not settings.api.allow_named_servers:
        raise BadRequest("Named servers are not enabled.")
    body = server_request_from(await read_json(request))
    await refresh_before_spawn(runtime, session, request.state.authenticator, request.state.crypt, name)
    async with session.begin():
        display_name = None
        if server_name:
            user = await lock_user(session, name)  # the named-server limit holds under concurrent starts
            new = await one_server_view(session, user, server_name) is None
            await check_named_server(session, settings, user, server_name, new=new)
            if new or body.display_name:
                display_name = check_display_name(body.display_name or server_name)
        else:
            user = await get_user(session, name)
        result = await start_server(session, settings, runtime.secret_key, user, server_name, body.user_options,
                                    announcer=runtime.announcer,
                                    display_name=display_name)
    if result.started:
        log.info("start of %s/%s requested: spawn %s", name, server_name, result.spawn_id)
        fault("api.after_commit_before_publish")
    if not runtime.bus.healthy.is_set():
        # NATS away: the command waits in the outbox and goes out when it returns; the outcome cannot come
        # sooner, so say "accepted" now rather than after slow_spawn_timeout
        return _plain(202)
    seen = await waiters.wait(result.spawn_id, set(Outcome), settings.api.slow_spawn_timeout)
    fault("api.after_publish_before_reply")  # an outcome seen (or the wait over): the relay has published
    if seen is not None and seen.outcome is Outcome.READY:
        return _plain(201)
    if seen is not None and seen.outcome is Outcome.FAILED:
        raise FleethubError(f"Spawn failed: {seen.message}", status=500)
    return _plain(202)


async def _stop(name: str, server_name: ServerName, request: Request, req: CurrentUser, runtime: Runtime,
                session: DbSession, waiters: Waiters) -> Response:
    req.require("delete:servers", user=name, server_name=server_name)
    body = await parse_body(request, ServerStop, required=False)
    if body.remove and not server_name:
        raise BadRequest("Cannot delete the default server")
    async with session.begin():
        user = await get_user(session, name)
        if server_name and await one_server_view(session, user, server_name) is None:
            raise NotFound(f"{name} has no server named '{server_name}'")
        spawn_id = await stop_server(session, user, server_name,
                                     announcer=runtime.announcer)
        if body.remove:
            await remove_server(session, user, server_name)
    fault("api.after_commit_before_publish")
    if spawn_id is None:
        return _plain(204)
    log.info("stop of %s/%s requested: spawn %s", name, server_name, spawn_id)
    if not runtime.bus.healthy.is_set():  # as for a start: the stop waits in the outbox
        return _plain(202)
    seen = await waiters.wait(spawn_id, {Outcome.STOPPED, Outcome.FAILED}, runtime.settings.api.slow_stop_timeout)
    fault("api.after_publish_before_reply")
    return _plain(204 if seen is not None else 202)


# --- progress -------------------------------------------------------------------------------------

async def _encoded(stream: ProgressStream) -> AsyncGenerator[bytes, None]:
    async with contextlib.aclosing(stream.events()) as events:
        async for event in events:
            yield b"\n\n" if event is None else f"data: {json.dumps(event)}\n\n".encode()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStream(StreamingResponse):
    """JupyterHub's `text/event-stream`: `data: <json>` per event, a blank line as keep-alive.

    It ends as soon as the client goes away, whatever ASGI version the server speaks (Starlette only
    listens for the disconnect below 2.4), and its subscription is closed however it ends.
    """

    def __init__(self, stream: ProgressStream) -> None:
        self._stream = stream
        self._events = _encoded(stream)
        super().__init__(self._events, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sending = asyncio.ensure_future(self.stream_response(send))
        watching = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((sending, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, watching):
                task.cancel()
            await asyncio.gather(sending, watching, return_exceptions=True)
            await self._events.aclose()
            self._stream.close()
        error = None if sending.cancelled() else sending.exception()
        if error is not None and not isinstance(error, OSError):  # OSError: the client went away
            raise error


async def _progress(name: str, server_name: ServerName, req: CurrentUser, session: DbSession,
                    waiters: Waiters, runtime: Runtime) -> Response:
    req.require("read:servers", user=name, server_name=server_name)
    async with session.begin():
        user = await get_user(session, name)
        stream = await open_progress(session, waiters, user, server_name, base_url=runtime.settings.base_url)
    return EventStream(stream)


# --- routes ---------------------------------------------------------------------------------------

ServerHandler = Callable[..., Awaitable[Response]]

# (method, path after the server's, handler): each handler takes the user's `name` and the `server_name`.
# On each path, methods are registered in this order, which decides the `Allow` of a 405.
SERVER_ROUTES: tuple[tuple[str, str, ServerHandler], ...] = (
    ("GET", "", _get),
    ("PUT", "", _create),
    ("PATCH", "", _patch),
    ("POST", "", _start),
    ("DELETE", "", _stop),
    ("GET", "/progress", _progress),
)


def server_paths(suffix: str) -> tuple[str, ...]:
    """The paths of an operation: the default server's (`/server`, and `/servers/` for an empty server
    name), then the named servers'."""
    default = (f"/users/{{name}}/server{suffix}",) if suffix else ("/users/{name}/server", "/users/{name}/servers/")
    return (*default, f"/users/{{name}}/servers/{{server_name}}{suffix}")


def _register(table: tuple[tuple[str, str, ServerHandler], ...]) -> None:
    for method, suffix, handler in table:
        for path in server_paths(suffix):
            router.add_api_route(path, handler, methods=[method])


_register(SERVER_ROUTES)


@router.post("/users/{name}/admin-access")
async def admin_access(name: str, req: CurrentUser, session: DbSession) -> Response:
    """Deprecated since JupyterHub 0.8 (OAuth made it unnecessary): a no-op kept for old clients."""
    req.require("servers", user=name)
    async with session.begin():
        await get_user(session, name)
    return Response(status_code=200, media_type="application/json")

