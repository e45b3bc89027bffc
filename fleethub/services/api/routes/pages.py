"""Hub pages: the start form (profiles and backend options), stop, and spawn-pending (home: routes/home.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.access import HIDDEN, load_requester
from fleethub.services.api.browser import check_form, form_xsrf, login_redirect, with_xsrf
from fleethub.services.api.deps import DbSession, PageUser, Runtime, Waiters
from fleethub.services.api.models import AnyView, Pending
from fleethub.services.api.page_context import nav_for, templates
from fleethub.services.api.pages import ERROR_MESSAGES, HomeState
from fleethub.services.api.queries import get_user, one_server_view
from fleethub.services.api.refresh import refresh_before_spawn
from fleethub.services.api.servers import check_display_name, check_named_server, lock_user, start_server, stop_server
from fleethub.services.api.spawn_form import offered, offers_options, user_options_of
from fleethub.shared.backend_options import configure_for
from fleethub.shared.db.models import User
from fleethub.shared.errors import BadRequest, ConfigError, Forbidden, NotFound
from fleethub.shared.http import error_html
from fleethub.shared.identity import Identity, validate_next
from fleethub.shared.lifecycle import ServerStatus
from fleethub.shared.names import server_prefix, storable, url_escape
from fleethub.shared.paths import checked_location, quote_path
from fleethub.shared.profiles import PROFILE_OPTION, resolve

router = APIRouter()


def _state(view: AnyView | None) -> HomeState:
    if view is None:
        return HomeState.STOPPED
    active, ready, pending = view.status
    return HomeState.READY if ready and pending is None else HomeState.PENDING if active else HomeState.STOPPED


def _pending_url(name: str, server_name: str = "") -> str:
    return f"/hub/spawn-pending/{url_escape(name)}" + (f"/{url_escape(server_name)}" if server_name else "")


def _with_next(request: Request, url: str) -> str:
    """`url` carrying the request's `next` (where the browser goes once the server is ready), if any: the
    spawn-pending page checks it before it leads there."""
    next_url = request.query_params.get("next", "")
    return f"{url}?next={quote(next_url, safe='/')}" if next_url else url


async def _may_start(request: Request, session: AsyncSession, ident: Identity, name: str,
                     server_name: str = "") -> None:
    allowed = (await load_requester(request, session, ident)).can("start:servers", name, server_name)
    await session.rollback()  # the caller opens its own transaction
    if not allowed:
        raise NotFound(HIDDEN)


@router.get("/hub/")
@router.get("/hub")
async def hub_root() -> Response:
    return RedirectResponse("/hub/home", status_code=302)


@router.get("/hub/error/{status}")
async def proxy_error(request: Request, session: DbSession, ident: PageUser, status: int, url: str = "") -> Response:
    """The page proxies show for a user server they cannot reach, with that status (CHP's error target):
    error.html with the address that failed, and the navigation of the user who looks."""
    if not 400 <= status <= 599:
        raise BadRequest("Error pages exist for statuses 400-599")
    nav = await nav_for(request, session, ident) if ident is not None else None
    page = error_html(request, status, ERROR_MESSAGES.get(status, "Something went wrong."), url[:2000], nav=nav)
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


async def _form(request: Request, runtime: Runtime, session: AsyncSession, ident: Identity, name: str, *,
                server_name: str = "", status: int = 200, error: str = "", chosen: str | None = None) -> Response:
    xsrf = form_xsrf(request, runtime, ident)
    page = templates(request).render(
        "spawn.html", nav=await nav_for(request, session, ident), owner=name, server_name=server_name,
        action=_with_next(request, quote_path(request.url.path)),  # decoded once by the server: posted back here
        xsrf=xsrf, profiles=offered(runtime.settings.spawner, chosen), error=error)
    return with_xsrf(request, runtime, HTMLResponse(page, status_code=status), xsrf)


def _named_servers_on(runtime: Runtime, server_name: str) -> None:
    if server_name and not runtime.settings.api.allow_named_servers:
        raise NotFound("Named servers are not enabled.")


@router.get("/hub/spawn")
@router.get("/hub/spawn/{name}")
@router.get("/hub/spawn/{name}/{server_name}")
async def spawn_form(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                     name: str | None = None, server_name: str = "") -> Response:
    if ident is None:
        return login_redirect(request)
    _named_servers_on(runtime, server_name)
    name = name or ident.name
    await _may_start(request, session, ident, name, server_name)
    state = _state(await one_server_view(session, await get_user(session, name), server_name))
    if state is HomeState.READY:
        prefix = server_prefix(name, server_name)
        return RedirectResponse(_ready_target(runtime, request.query_params.get("next", ""), prefix), status_code=302)
    if state is HomeState.PENDING:
        return RedirectResponse(checked_location(_with_next(request, _pending_url(name, server_name))), status_code=302)
    return await _form(request, runtime, session, ident, name, server_name=server_name)


async def _owner(session: AsyncSession, runtime: Runtime, name: str, server_name: str) -> tuple[User, str | None]:
    """The user whose server starts, and a new named server's display name (the REST start's checks:
    the user locked so the named-server limit holds under concurrent starts)."""
    if not server_name:
        return await get_user(session, name), None
    user = await lock_user(session, name)
    new = await one_server_view(session, user, server_name) is None
    await check_named_server(session, runtime.settings, user, server_name, new=new)
    return user, check_display_name(server_name) if new else None


@router.post("/hub/spawn")
@router.post("/hub/spawn/{name}")
@router.post("/hub/spawn/{name}/{server_name}")
async def spawn(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                name: str | None = None, server_name: str = "",
                xsrf: str = Form("", alias="_xsrf", max_length=500)) -> Response:
    me = check_form(request, runtime, ident, xsrf)
    _named_servers_on(runtime, server_name)
    name = name or me.name
    await _may_start(request, session, me, name, server_name)
    form = await request.form()
    fields = {key: [v for v in form.getlist(key) if isinstance(v, str)] for key in form}
    options = user_options_of(runtime.settings.spawner, fields)
    try:  # the REST API's rules: an unknown profile or a refused option is a 400, and nothing starts
        if not all(storable(key) and all(storable(v) for v in values) for key, values in fields.items()):
            raise BadRequest("The form holds a character that cannot be stored (NUL)")
        choice = resolve(runtime.settings.spawner, options, configure_for)
    except (BadRequest, ConfigError) as exc:
        chosen = options.get(PROFILE_OPTION)
        return await _form(request, runtime, session, me, name, server_name=server_name, status=exc.status,
                           error=exc.message, chosen=chosen if isinstance(chosen, str) else None)
    try:
        await refresh_before_spawn(runtime, session, request.state.authenticator, request.state.crypt, name)
    except Forbidden as exc:  # the owner's login expired (their sessions ended): mine → log in again
        if me.name == name:
            return login_redirect(request)
        return await _form(request, runtime, session, me, name, server_name=server_name, status=exc.status,
                           error=f"{name}: {exc.message}", chosen=choice.profile)
    async with session.begin():
        try:
            user, display_name = await _owner(session, runtime, name, server_name)
        except BadRequest as exc:  # a named server refused (its name, the limit): nothing written
            return await _form(request, runtime, session, me, name, server_name=server_name, status=exc.status,
                               error=exc.message, chosen=choice.profile)
        try:
            await start_server(session, runtime.settings, runtime.secret_key, user, server_name, choice.user_options,
                               announcer=runtime.announcer, display_name=display_name)
        except BadRequest:
            pass  # already running or stopping: the pending page shows where it is
    return RedirectResponse(checked_location(_with_next(request, _pending_url(name, server_name))), status_code=302)


@router.post("/hub/stop")
async def stop(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
               xsrf: str = Form("", alias="_xsrf", max_length=500)) -> Response:
    me = check_form(request, runtime, ident, xsrf)
    async with session.begin():
        await stop_server(session, await get_user(session, me.name), "",
                          announcer=runtime.announcer)
    return RedirectResponse("/hub/home", status_code=302)


def _progress_url(name: str, server_name: str) -> str:
    server = f"servers/{url_escape(server_name)}" if server_name else "server"
    return f"/hub/api/users/{url_escape(name)}/{server}/progress"


class PendingPage(enum.StrEnum):
    """What the spawn-pending page shows (`state` in spawn_pending.html)."""

    STARTING = "starting"  # the bar and the messages, followed live by spawn_pending.js
    STOPPING = ServerStatus.STOPPING.value
    FAILED = ServerStatus.FAILED.value


@dataclass(frozen=True)
class Retry:
    """The pending page's "Try again": back to the spawn form when it has choices, else a start (POST)."""

    url: str
    post: bool


def _retry(request: Request, runtime: Runtime, name: str, server_name: str) -> Retry:
    url = f"/hub/spawn/{url_escape(name)}" + (f"/{url_escape(server_name)}" if server_name else "")
    return Retry(_with_next(request, url), post=not offers_options(runtime.settings.spawner))


def _ready_target(runtime: Runtime, next_url: str, prefix: str) -> str:
    """Where a ready server's pending page leads: `next` when it is inside the server, else the server."""
    target = validate_next(next_url, runtime.settings.hub_public_url, default=prefix)  # dot segments: `prefix`
    return checked_location(target if target.startswith(prefix) else prefix)


@router.get("/hub/spawn-pending/{name}")
@router.get("/hub/spawn-pending/{name}/{server_name}")
async def spawn_pending(name: str, request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                        waiters: Waiters, server_name: str = "", next: str = "") -> Response:
    if ident is None:
        return login_redirect(request)
    if not (await load_requester(request, session, ident)).can("read:servers", name, server_name):
        raise NotFound(HIDDEN)
    view = await one_server_view(session, await get_user(session, name), server_name)
    prefix = server_prefix(name, server_name)
    state = _state(view)
    if state is HomeState.READY:
        return RedirectResponse(_ready_target(runtime, next, prefix), status_code=302)
    failed = view.current_state if view is not None else None
    if state is HomeState.PENDING and view is not None:
        spawn_id = view.server.spawn_id or ""
        page, status = PendingPage.STOPPING if view.status.pending == Pending.STOP else PendingPage.STARTING, 200
        percent, steps, message = waiters.percent(spawn_id), waiters.progress(spawn_id), ""
    elif failed is not None and failed.status == ServerStatus.FAILED:
        page, status, percent, steps, message = PendingPage.FAILED, 500, 100, [], f"Spawn failed: {failed.message}"
    else:
        return RedirectResponse("/hub/home", status_code=302)
    xsrf = form_xsrf(request, runtime, ident)
    html = templates(request).render(
        "spawn_pending.html", nav=await nav_for(request, session, ident), owner=name, server_name=server_name,
        state=page, message=message, percent=percent, steps=steps, progress_url=_progress_url(name, server_name),
        next_url=_ready_target(runtime, next, prefix), retry=_retry(request, runtime, name, server_name), xsrf=xsrf)
    return with_xsrf(request, runtime, HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"}),
                     xsrf)
