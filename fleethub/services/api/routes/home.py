"""The home page (`/hub/home`): the default server and, with `allow_named_servers`, the named ones, with
their actions as plain forms (home.js drives the same actions through the REST API and keeps the states
current): create a named server, stop one, delete one. Starting goes through `/hub/spawn/...`."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.access import HIDDEN, load_requester
from fleethub.services.api.browser import check_form, form_xsrf, login_redirect, with_xsrf
from fleethub.services.api.deps import DbSession, PageUser, Runtime
from fleethub.services.api.page_context import nav_for, templates
from fleethub.services.api.queries import get_user, one_server_view, server_views
from fleethub.services.api.refresh import refresh_before_spawn
from fleethub.services.api.server_rows import ago, home_servers, pending_url, placeholder_row
from fleethub.services.api.servers import (
    check_display_name,
    check_named_server,
    lock_user,
    remove_server,
    start_server,
    stop_server,
)
from fleethub.services.api.spawn_form import offers_options
from fleethub.shared.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests
from fleethub.shared.events import utcnow
from fleethub.shared.http import iso
from fleethub.shared.identity import Identity
from fleethub.shared.names import url_escape
from fleethub.shared.paths import checked_location
from fleethub.shared.settings import ServiceSettings

router = APIRouter()
HOME = "/hub/home"
# what a refused creation is answered with: the home page again, its message above the form
_REFUSED = (BadRequest, Conflict, TooManyRequests)


def _full(settings: ServiceSettings, count: int) -> bool:
    limit = settings.api.named_server_limit_per_user
    return bool(limit) and count >= limit


def limit_note(settings: ServiceSettings, count: int) -> str:
    """What the page says of the named-server limit ("" without one)."""
    limit = settings.api.named_server_limit_per_user
    if not limit:
        return ""
    if _full(settings, count):
        return f"You have the maximum of {limit} named servers: delete one to create another."
    return f"You have {count} of at most {limit} named servers."


async def _page(request: Request, runtime: Runtime, session: AsyncSession, ident: Identity, *,
                status: int = 200, error: str = "", new_name: str = "") -> Response:
    user = await get_user(session, ident.name)
    name = user.name
    servers = home_servers(name, (await server_views(session, [user])).get(user.id, []))
    nav = await nav_for(request, session, ident)
    await session.rollback()  # reads only: nothing held while the page renders
    settings = runtime.settings
    xsrf = form_xsrf(request, runtime, ident)
    page = templates(request).render(
        "home.html", nav=nav, user=name, servers=servers, xsrf=xsrf, now=utcnow(), ago=ago,
        named_servers=settings.api.allow_named_servers, limit=settings.api.named_server_limit_per_user,
        limit_note=limit_note(settings, len(servers.named)), limit_full=_full(settings, len(servers.named)),
        with_options=offers_options(settings.spawner), iso=iso, q=url_escape, placeholder=placeholder_row(name),
        api_url=f"/hub/api/users/{url_escape(name)}", spawn_url=f"/hub/spawn/{url_escape(name)}",
        error=error, new_name=new_name,
    )
    response = HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})
    return with_xsrf(request, runtime, response, xsrf)


@router.get(HOME)
async def home(request: Request, runtime: Runtime, session: DbSession, ident: PageUser) -> Response:
    if ident is None:
        return login_redirect(request)
    return await _page(request, runtime, session, ident)


async def _may(request: Request, session: AsyncSession, ident: Identity, scope: str, server_name: str) -> None:
    allowed = (await load_requester(request, session, ident)).can(scope, ident.name, server_name)
    await session.rollback()  # the caller opens its own transaction
    if not allowed:
        raise NotFound(HIDDEN)


async def _create(session: AsyncSession, runtime: Runtime, me: Identity, server_name: str, *, start: bool) -> None:
    """Check a new named server (the REST API's rules, the user locked for the limit) and, with `start`,
    start it (its options the default ones: nothing to choose)."""
    settings = runtime.settings
    async with session.begin():
        user = await lock_user(session, me.name)
        if await one_server_view(session, user, server_name) is not None:
            raise Conflict(f"You already have a server named {server_name!r}.")
        await check_named_server(session, settings, user, server_name, new=True)
        if start:
            await start_server(session, settings, runtime.secret_key, user, server_name, None,
                               announcer=runtime.announcer, display_name=check_display_name(server_name))


@router.post(f"{HOME}/servers")
async def create_named(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                       xsrf: str = Form("", alias="_xsrf", max_length=500),
                       server_name: str = Form("", max_length=1000)) -> Response:
    """A new named server: started at once (to its pending page), or, with options to choose, to its form."""
    me = check_form(request, runtime, ident, xsrf)
    if not runtime.settings.api.allow_named_servers:
        raise NotFound("Named servers are not enabled.")
    name = server_name.strip()
    await _may(request, session, me, "start:servers", name)
    with_options = offers_options(runtime.settings.spawner)
    try:
        if not with_options:
            await refresh_before_spawn(runtime, session, request.state.authenticator, request.state.crypt, me.name)
        await _create(session, runtime, me, name, start=not with_options)
    except Forbidden:  # my login expired (refresh_pre_spawn): log in again
        return login_redirect(request)
    except _REFUSED as exc:
        return await _page(request, runtime, session, me, status=exc.status, error=exc.message, new_name=name)
    if with_options:  # the form of the new server: the spawn checks it again when it is posted
        return RedirectResponse(checked_location(f"/hub/spawn/{url_escape(me.name)}/{url_escape(name)}"),
                                status_code=303)
    return RedirectResponse(checked_location(pending_url(me.name, name)), status_code=303)


async def _stop(request: Request, runtime: Runtime, session: AsyncSession, ident: Identity | None, xsrf: str,
                server_name: str, *, remove: bool) -> Response:
    me = check_form(request, runtime, ident, xsrf)
    await _may(request, session, me, "delete:servers", server_name)
    async with session.begin():
        user = await get_user(session, me.name)
        if await one_server_view(session, user, server_name) is None:
            raise NotFound(f"You have no server named {server_name!r}.")
        await stop_server(session, user, server_name, announcer=runtime.announcer)
        if remove:
            await remove_server(session, user, server_name)
    return RedirectResponse(HOME, status_code=303)


@router.post(HOME + "/servers/{server_name}/stop")
async def stop_named(request: Request, runtime: Runtime, session: DbSession, ident: PageUser, server_name: str,
                     xsrf: str = Form("", alias="_xsrf", max_length=500)) -> Response:
    return await _stop(request, runtime, session, ident, xsrf, server_name, remove=False)


@router.post(HOME + "/servers/{server_name}/delete")
async def delete_named(request: Request, runtime: Runtime, session: DbSession, ident: PageUser, server_name: str,
                       xsrf: str = Form("", alias="_xsrf", max_length=500)) -> Response:
    """Stop the named server (if it runs) and forget it, as `DELETE /servers/{name}` with `remove`."""
    return await _stop(request, runtime, session, ident, xsrf, server_name, remove=True)

