"""Hub pages: home, the start form, stop, and spawn-pending."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.access import HIDDEN, load_requester
from fleethub.services.api.browser import check_form, form_xsrf, login_redirect, with_xsrf
from fleethub.services.api.deps import DbSession, PageUser, Runtime
from fleethub.services.api.models import AnyView
from fleethub.services.api.pages import HomeState, error_page, home_page, pending_page, spawn_page
from fleethub.services.api.queries import get_user, one_server_view
from fleethub.services.api.servers import start_server, stop_server
from fleethub.shared.errors import BadRequest, NotFound
from fleethub.shared.identity import Identity, validate_next
from fleethub.shared.lifecycle import ServerStatus
from fleethub.shared.names import server_prefix, url_escape
from fleethub.shared.paths import checked_location

router = APIRouter()


def _state(view: AnyView | None) -> HomeState:
    if view is None:
        return HomeState.STOPPED
    active, ready, pending = view.status
    return HomeState.READY if ready and pending is None else HomeState.PENDING if active else HomeState.STOPPED


def _pending_url(name: str) -> str:
    return f"/hub/spawn-pending/{url_escape(name)}"


async def _may_start(request: Request, session: AsyncSession, ident: Identity, name: str) -> None:
    allowed = (await load_requester(request, session, ident)).can("start:servers", name, "")
    await session.rollback()  # the caller opens its own transaction
    if not allowed:
        raise NotFound(HIDDEN)


@router.get("/hub/")
@router.get("/hub")
async def hub_root() -> Response:
    return RedirectResponse("/hub/home", status_code=302)


@router.get("/hub/error/{status}")
async def proxy_error(status: int, url: str = "") -> Response:
    """The page proxies show for a user server they cannot reach, with that status (CHP's error target)."""
    if not 400 <= status <= 599:
        raise BadRequest("Error pages exist for statuses 400-599")
    page = error_page(status, url[:2000])
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/hub/home")
async def home(request: Request, runtime: Runtime, session: DbSession, ident: PageUser) -> Response:
    if ident is None:
        return login_redirect(request)
    user = await get_user(session, ident.name)
    state = _state(await one_server_view(session, user, ""))
    xsrf = form_xsrf(request, runtime, ident)
    page = home_page(ident.name, state, server_prefix(ident.name), xsrf, _pending_url(ident.name))
    return with_xsrf(request, runtime, HTMLResponse(page), xsrf)


@router.get("/hub/spawn")
@router.get("/hub/spawn/{name}")
async def spawn_form(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                     name: str | None = None) -> Response:
    if ident is None:
        return login_redirect(request)
    name = name or ident.name
    await _may_start(request, session, ident, name)
    state = _state(await one_server_view(session, await get_user(session, name), ""))
    if state is HomeState.READY:
        return RedirectResponse(checked_location(server_prefix(name)), status_code=302)
    if state is HomeState.PENDING:
        return RedirectResponse(checked_location(_pending_url(name)), status_code=302)
    xsrf = form_xsrf(request, runtime, ident)
    return with_xsrf(request, runtime, HTMLResponse(spawn_page(name, request.url.path, xsrf)), xsrf)


@router.post("/hub/spawn")
@router.post("/hub/spawn/{name}")
async def spawn(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                name: str | None = None, xsrf: str = Form("", alias="_xsrf", max_length=500)) -> Response:
    me = check_form(request, runtime, ident, xsrf)
    name = name or me.name
    await _may_start(request, session, me, name)
    async with session.begin():
        user = await get_user(session, name)
        try:
            await start_server(session, runtime.settings, runtime.secret_key, user, "", None,
                               announcer=runtime.announcer)
        except BadRequest:
            pass  # already running or stopping: the pending page shows where it is
    return RedirectResponse(checked_location(_pending_url(name)), status_code=302)


@router.post("/hub/stop")
async def stop(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
               xsrf: str = Form("", alias="_xsrf", max_length=500)) -> Response:
    me = check_form(request, runtime, ident, xsrf)
    async with session.begin():
        await stop_server(session, await get_user(session, me.name), "",
                          announcer=runtime.announcer)
    return RedirectResponse("/hub/home", status_code=302)


@router.get("/hub/spawn-pending/{name}")
@router.get("/hub/spawn-pending/{name}/{server_name}")
async def spawn_pending(name: str, request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                        server_name: str = "", next: str = "") -> Response:
    if ident is None:
        return login_redirect(request)
    if not (await load_requester(request, session, ident)).can("read:servers", name, server_name):
        raise NotFound(HIDDEN)
    view = await one_server_view(session, await get_user(session, name), server_name)
    prefix = server_prefix(name, server_name)
    state = _state(view)
    if state is HomeState.READY:
        target = validate_next(next, runtime.settings.hub_public_url, default=prefix)  # dot segments: `prefix`
        return RedirectResponse(checked_location(target if target.startswith(prefix) else prefix), status_code=302)
    if state is HomeState.PENDING:
        return HTMLResponse(pending_page("Spawning server..."), headers={"Cache-Control": "no-store"})
    failed = view.current_state if view is not None else None
    if failed is not None and failed.status == ServerStatus.FAILED:
        return HTMLResponse(pending_page(f"Spawn failed: {failed.message}", refresh=False), status_code=500)
    return RedirectResponse("/hub/home", status_code=302)
