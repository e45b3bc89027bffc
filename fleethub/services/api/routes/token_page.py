"""`/hub/token`: request an API token, and list and revoke the user's tokens and OAuth authorizations.

The page lists; its script (`static/token.js`) creates and revokes through the REST API with the
`X-XSRFToken` header, as JupyterHub's page does. So the API's own rules (scopes, expiry limit) judge every
request, and a new token reaches only the script's JSON answer: never a URL, a log line, a cached page or
one a reload would post again. "Last use" is the token's `last_activity`, an OAuth client's the latest of its
tokens' (as JupyterHub's page shows); the page writes this replica's pending token uses before it lists them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from fleethub.services.api.access import load_requester
from fleethub.services.api.activity import TokenUse
from fleethub.services.api.browser import form_xsrf, login_redirect, with_xsrf
from fleethub.services.api.deps import DbSession, PageUser, Runtime
from fleethub.services.api.page_context import nav_for, templates
from fleethub.services.api.queries import get_user
from fleethub.services.api.token_lists import TokenLists, expiry_choices, token_lists

router = APIRouter()


@router.get("/hub/token")
async def token_page(request: Request, runtime: Runtime, session: DbSession, ident: PageUser) -> Response:
    if ident is None:
        return login_redirect(request)
    nav = await nav_for(request, session, ident)
    req = await load_requester(request, session, ident)
    may_list = req.can("read:tokens", ident.name)
    if may_list:  # the uses this replica noted but has not written yet (every 10 s): "last use" is the latest
        token_use: TokenUse = request.state.token_use
        await token_use.flush()
    lists = await token_lists(session, runtime.settings, await get_user(session, ident.name)) if may_list \
        else TokenLists([], [])
    await session.rollback()
    limit = runtime.settings.api.token_expires_in_max_seconds
    page = templates(request).render(
        "token.html", nav=nav, user=ident.name, api_url="/hub/api/", lists=lists, may_list=may_list,
        may_create=req.can("tokens", ident.name), expiry_choices=expiry_choices(limit),
    )
    # the XSRF cookie the script sends back; the page is never cached (it lists the user's tokens)
    xsrf = form_xsrf(request, runtime, ident)
    return with_xsrf(request, runtime, HTMLResponse(page, headers={"Cache-Control": "no-store"}), xsrf)
