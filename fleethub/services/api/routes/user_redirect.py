"""`/hub/user/{name}/...`: where the proxy sends requests for a server that has no route (contract §c.5);
`/hub/user-redirect/...`: the same path on the logged-in user's own server.

Stopped: 424 (JSON for API clients, a page offering to start it for browsers); starting: 303 to the
spawn-pending page; running: back to the server, counting redirects in `?redirects=` and waiting a little
longer before each (the proxy node that sent the request does not serve the route yet: a node cut off
from NATS, or one that lags), up to `MAX_REDIRECTS`, then an error: never a tight redirect loop.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from fleethub.services.api.access import HIDDEN, load_requester
from fleethub.services.api.browser import form_xsrf, login_redirect, with_xsrf
from fleethub.services.api.deps import DbSession, PageUser, Runtime
from fleethub.services.api.models import INACTIVE, AnyView
from fleethub.services.api.page_context import nav_for, templates
from fleethub.services.api.queries import get_user, server_views
from fleethub.services.api.spawn_form import offers_options
from fleethub.shared.baseurl import public_path
from fleethub.shared.errors import BadRequest, FleethubError, Forbidden, NotFound
from fleethub.shared.identity import Identity
from fleethub.shared.names import server_prefix, url_escape
from fleethub.shared.paths import checked_location, has_dot_segment, quote_path

router = APIRouter()
MAX_REDIRECTS = 4
REDIRECT_WAIT = 0.25  # seconds before the first redirect back, doubled for each one since (0.25+0.5+1+2 in all)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


def _pick_server(views: list[AnyView], path: str, named: bool) -> tuple[str, str, AnyView | None]:
    """(server name, path inside it, its view): a named server if the first segment names one."""
    first, _, rest = path.partition("/")
    if named and first:
        for view in views:
            if view.server.name and view.server.name == first:
                return first, rest, view
    default = next((v for v in views if v.server.name == ""), None)
    return "", path, default


def _redirects(request: Request) -> int:
    raw = request.query_params.get("redirects", "0")
    return int(raw) if raw.isdigit() and len(raw) < 4 else 0


def _wants_json(request: Request, path: str) -> bool:
    accept = request.headers.get("accept", "")
    json_accept = "application/json" in accept and "text/html" not in accept
    return request.method != "GET" or "/api/" in f"/{path}" or json_accept


async def _back_to_server(request: Request, session: DbSession, target: str) -> Response:
    n = _redirects(request)
    if n >= MAX_REDIRECTS:
        raise FleethubError(f"Redirect loop detected: {target} is running but can not be reached yet", status=500)
    # ready, yet this request came through a proxy node without the route: give the node time to catch up
    # rather than bounce the browser straight back (the database connection is not held meanwhile)
    await session.rollback()
    await asyncio.sleep(REDIRECT_WAIT * 2**n)
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "redirects"] + [("redirects", str(n + 1))]
    return RedirectResponse(checked_location(f"{target}?{urlencode(query)}"), status_code=302)


# never carried on in `next` (an encoded query escapes the logs' scrubbing): our redirect count, and the
# parameters that hold credentials (the names logging.py scrubs)
_NOT_CARRIED = frozenset({"redirects", "token", "auth", "key", "code", "state", "_xsrf", "password", "client_secret"})


def _asked(request: Request, target: str) -> str:
    """Where the request was going: the server's path with its query, less `_NOT_CARRIED`."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k.lower() not in _NOT_CARRIED])
    return f"{target}?{query}" if query else target


async def _stopped(request: Request, runtime: Runtime, session: DbSession, ident: Identity, name: str, server: str,
                   target: str, path: str) -> Response:
    spawn_url = f"/hub/spawn/{url_escape(name)}" + (f"/{url_escape(server)}" if server else "")
    base_url = runtime.settings.base_url
    message = (f"JupyterHub server no longer running at {public_path(base_url, target)}. "
               f"Restart the server at {public_path(base_url, spawn_url)}")
    if _wants_json(request, path):
        return JSONResponse({"status": 424, "message": message}, status_code=424)
    # "Start it" carries where the browser was going: after the spawn it lands there, not at the server's root
    spawn_url += f"?next={quote(_asked(request, target), safe='/')}"
    nav = await nav_for(request, session, ident)
    await session.rollback()
    xsrf = form_xsrf(request, runtime, ident)
    page = templates(request).render(
        "not_running.html", nav=nav, owner=name, own=name == ident.name, server_name=server, target=target,
        spawn_url=spawn_url, xsrf=xsrf, with_options=offers_options(runtime.settings.spawner))
    return with_xsrf(request, runtime, HTMLResponse(page, status_code=424), xsrf)


@router.api_route("/hub/user/{name}/{path:path}", methods=METHODS)
@router.api_route("/hub/user/{name}", methods=METHODS)
async def user_redirect(name: str, request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                        path: str = "") -> Response:
    if ident is None:
        if request.method == "GET":
            return login_redirect(request)
        raise Forbidden("Missing or invalid credentials.")
    try:  # an unknown user and a forbidden one get the same answer
        user = await get_user(session, name)
    except NotFound:
        raise NotFound(HIDDEN) from None
    views = (await server_views(session, [user])).get(user.id, [])
    if has_dot_segment(path, decoded=True):  # `path` is decoded once already: its dots would land outside the prefix
        raise BadRequest("Invalid path: '.' and '..' segments are not allowed")
    server, inner, view = _pick_server(views, path, runtime.settings.api.allow_named_servers)
    if not (await load_requester(request, session, ident)).can("access:servers", name, server):
        raise NotFound(HIDDEN)
    target = checked_location(server_prefix(name, server) + quote_path(inner))
    active, ready, pending = view.status if view is not None else INACTIVE
    if ready and pending is None:
        return await _back_to_server(request, session, target)
    if active:
        spawn_pending = f"/hub/spawn-pending/{url_escape(name)}" + (f"/{url_escape(server)}" if server else "")
        return RedirectResponse(f"{spawn_pending}?next={quote(_asked(request, target), safe='/')}", status_code=303)
    return await _stopped(request, runtime, session, ident, name, server, target, inner)


@router.get("/hub/user-redirect/{path:path}")
@router.get("/hub/user-redirect")
async def user_redirect_to_own(request: Request, ident: PageUser, path: str = "") -> Response:
    """`/hub/user-redirect/<path>`: the same path on the logged-in user's own server (links that work for
    whoever follows them, e.g. nbgitpuller's). The path stays inside the user's prefix: dot segments
    and backslashes are refused."""
    if ident is None:
        return login_redirect(request)
    if "\\" in path or has_dot_segment(path, decoded=True):  # decoded once already: `%252e` is the text `%2e` here
        raise BadRequest("Invalid path: '.' and '..' segments are not allowed")
    target = checked_location(server_prefix(ident.name) + quote_path(path))  # `%` escaped: never decoded twice
    query = request.url.query
    return RedirectResponse(target + (f"?{query}" if query else ""), status_code=302)
