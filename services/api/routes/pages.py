"""Hub pages: home, start/stop forms, spawn-pending, and the landing place of stopped-server URLs."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from shared.errors import FleethubError, Forbidden, NotFound
from shared.identity import XSRF_COOKIE, Identity, new_xsrf, set_xsrf_cookie, xsrf_valid
from shared.names import server_prefix, url_escape

from services.api.deps import DbSession, PageUser, RuntimeDep
from services.api.pages import home_page, pending_page, stopped_page
from services.api.queries import get_user, one_server_view
from services.api.servers import start_server, stop_server

router = APIRouter()
MAX_REDIRECTS = 4


def _login(request: Request) -> Response:
    return RedirectResponse(f"/hub/login?next={quote(request.url.path, safe='/')}", status_code=302)


def _with_xsrf(request: Request, runtime: RuntimeDep, response: Response, value: str) -> Response:
    if request.cookies.get(XSRF_COOKIE) != value:
        set_xsrf_cookie(response, value, runtime.settings.hub_public_url.startswith("https://"))
    return response


def _xsrf_for(request: Request, runtime: RuntimeDep) -> str:
    current = request.cookies.get(XSRF_COOKIE)
    return current if current and xsrf_valid(runtime.secret_key, current, current) else new_xsrf(runtime.secret_key)


async def _state(session: DbSession, ident: Identity) -> str:
    user = await get_user(session, ident.name)
    view = await one_server_view(session, user, "")
    if view is None:
        return "stopped"
    active, ready, pending = view.status
    return "ready" if ready and pending is None else "pending" if active else "stopped"


@router.get("/hub/")
@router.get("/hub")
async def hub_root() -> Response:
    return RedirectResponse("/hub/home", status_code=302)


@router.get("/hub/home")
async def home(request: Request, runtime: RuntimeDep, session: DbSession, ident: PageUser) -> Response:
    if ident is None:
        return _login(request)
    xsrf = _xsrf_for(request, runtime)
    page = home_page(ident.name, await _state(session, ident), server_prefix(ident.name), xsrf)
    return _with_xsrf(request, runtime, HTMLResponse(page), xsrf)


def _check_form(request: Request, runtime: RuntimeDep, ident: Identity | None, xsrf: str) -> Identity:
    if ident is None:
        raise Forbidden("Missing or invalid credentials.")
    if not xsrf_valid(runtime.secret_key, request.cookies.get(XSRF_COOKIE), xsrf):
        raise Forbidden("XSRF cookie does not match the form; reload the page and try again.")
    return ident


@router.post("/hub/spawn")
async def spawn_form(request: Request, runtime: RuntimeDep, session: DbSession, ident: PageUser,
                     xsrf: str = Form("", alias="_xsrf", max_length=500)) -> Response:
    me = _check_form(request, runtime, ident, xsrf)
    async with session.begin():
        user = await get_user(session, me.name)
        try:
            await start_server(session, runtime.settings, runtime.secret_key, user, "", None)
        except FleethubError as exc:
            if exc.status != 400:  # "already running" just goes on to the pending page
                raise
    runtime.relay.kick()
    return RedirectResponse(f"/hub/spawn-pending/{url_escape(me.name)}", status_code=302)


@router.post("/hub/stop")
async def stop_form(request: Request, runtime: RuntimeDep, session: DbSession, ident: PageUser,
                    xsrf: str = Form("", alias="_xsrf", max_length=500)) -> Response:
    me = _check_form(request, runtime, ident, xsrf)
    async with session.begin():
        user = await get_user(session, me.name)
        await stop_server(session, runtime.settings, user, "")
    runtime.relay.kick()
    return RedirectResponse("/hub/home", status_code=302)


@router.get("/hub/spawn-pending/{name}")
async def spawn_pending(name: str, request: Request, session: DbSession, ident: PageUser) -> Response:
    if ident is None:
        return _login(request)
    if ident.name != name and not ident.admin:
        raise NotFound("No access to resources or resources not found")
    user = await get_user(session, name)
    view = await one_server_view(session, user, "")
    if view is not None:
        active, ready, pending = view.status
        if ready and pending is None:
            return RedirectResponse(server_prefix(name), status_code=302)
        if active:
            return HTMLResponse(pending_page(name, "Spawning server..."))
        st = view.current_state
        if st is not None and st.status == "failed":
            return HTMLResponse(pending_page(name, f"Spawn failed: {st.message}").replace(
                '<meta http-equiv="refresh" content="1">', ""), status_code=500)
    return RedirectResponse("/hub/home", status_code=302)


@router.api_route("/hub/user/{name}/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
@router.api_route("/hub/user/{name}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
async def user_redirect(name: str, request: Request, runtime: RuntimeDep, session: DbSession, ident: PageUser,
                        path: str = "") -> Response:
    """Where the proxy sends requests for a server that has no route (JupyterHub contract §c.5)."""
    prefix = server_prefix(name)
    target = f"{prefix}{path}"
    if ident is None:
        if request.method == "GET":
            return _login(request)
        raise Forbidden("Missing or invalid credentials.")
    if ident.name != name and not ident.admin:
        raise NotFound("No access to resources or resources not found")
    user = await get_user(session, name)
    view = await one_server_view(session, user, "")
    active, ready, pending = view.status if view is not None else (False, False, None)
    if active and not ready:
        return RedirectResponse(f"/hub/spawn-pending/{url_escape(name)}?next={quote(target, safe='/')}", status_code=303)
    if ready:
        redirects = int(request.query_params.get("redirects", "0") or 0)
        if redirects >= MAX_REDIRECTS:
            raise FleethubError(f"Redirect loop detected: {target} is running but not reachable yet", status=500)
        return RedirectResponse(f"{target}?redirects={redirects + 1}", status_code=302)
    message = (f"JupyterHub server no longer running at {target}. "
               f"Restart the server at /hub/spawn/{url_escape(name)}")
    accept = request.headers.get("accept", "")
    if request.method != "GET" or "/api/" in f"/{path}" or ("application/json" in accept and "text/html" not in accept):
        return JSONResponse({"status": 424, "message": message}, status_code=424)
    xsrf = _xsrf_for(request, runtime)
    return _with_xsrf(request, runtime, HTMLResponse(stopped_page(name, target, xsrf), status_code=424), xsrf)
