"""`/hub/admin`: the admin panel (the `admin-ui` scope), a page whose script drives the REST API.

The page holds no authority of its own: every button is a call of `/hub/api/...` with the browser's cookie
and XSRF token, which the API checks against the admin's scopes like any other client's.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from fleethub.services.api.access import load_requester
from fleethub.services.api.browser import form_xsrf, login_redirect, with_xsrf
from fleethub.services.api.deps import DbSession, PageUser, Runtime
from fleethub.services.api.page_context import nav_for, templates
from fleethub.services.api.paging import DEFAULT_PAGINATED_LIMIT
from fleethub.services.api.spawn_form import offers_options
from fleethub.shared.errors import Forbidden

router = APIRouter()
ACCESS_SCOPE = "access:servers"


@router.get("/hub/admin")
async def admin(request: Request, runtime: Runtime, session: DbSession, ident: PageUser) -> Response:
    if ident is None:
        return login_redirect(request)
    req = await load_requester(request, session, ident)
    if not req.can("admin-ui"):
        await session.rollback()
        raise Forbidden("The admin panel requires the admin-ui scope.")
    nav = await nav_for(request, session, ident)
    await session.rollback()
    settings = runtime.settings
    # which servers the admin may open: the page's script matches these against each user and server
    held = [s for s in req.scopes if s.name == ACCESS_SCOPE]
    access = [ACCESS_SCOPE] if any(s.kind is None for s in held) else sorted(str(s) for s in held)
    xsrf = form_xsrf(request, runtime, ident)
    page = templates(request).render(
        "admin.html", nav=nav, me=ident.name, access_scopes=access,
        signups=settings.auth.authenticator == "password",
        named_servers=settings.api.allow_named_servers,
        spawn_form=offers_options(settings.spawner),
        manage_groups=settings.auth.manage_groups,
        page_size=DEFAULT_PAGINATED_LIMIT,
    )
    return with_xsrf(request, runtime, HTMLResponse(page, headers={"Cache-Control": "no-store"}), xsrf)
