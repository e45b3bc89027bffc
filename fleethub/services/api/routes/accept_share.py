"""`/hub/accept-share`: a logged-in user accepts a share code (confirmation page, then an XSRF-checked POST)."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleethub.services.api.browser import check_form, form_xsrf, login_redirect, with_xsrf
from fleethub.services.api.deps import PageUser, Runtime
from fleethub.services.api.page_context import nav_for, templates
from fleethub.services.api.shares import ACCEPT_PATH, exchange_code, find_invitation
from fleethub.shared.baseurl import inner_next
from fleethub.shared.errors import BadRequest, Forbidden, NotFound
from fleethub.shared.http import DbSession
from fleethub.shared.identity import validate_next

router = APIRouter()

@router.get(ACCEPT_PATH)
async def accept_page(request: Request, runtime: Runtime, session: DbSession, ident: PageUser, code: str = "",
                      next: str = "") -> Response:
    if ident is None:
        return login_redirect(request)
    if not code:
        raise BadRequest("Missing share code")
    invitation = await find_invitation(session, code)
    if invitation is None:
        raise NotFound("Share not found or expired")
    if invitation.owner_id == ident.user_id:
        raise Forbidden("You can't share with yourself!")
    target = validate_next(next, runtime.settings.hub_public_url, default=invitation.url)
    xsrf = form_xsrf(request, runtime, ident)
    label = f"{invitation.owner}'s server" + (f" ({invitation.server_name})" if invitation.server_name else "")
    page = templates(request).render(
        "accept-share.html", nav=await nav_for(request, session, ident), user=ident.name, label=label,
        owner=invitation.owner, server_url=invitation.url, ready=invitation.ready, scopes=list(invitation.scopes),
        action=ACCEPT_PATH, xsrf=xsrf, code=code, next_url=target)
    return with_xsrf(request, runtime, HTMLResponse(page, headers={"Cache-Control": "no-store"}), xsrf)


@router.post(ACCEPT_PATH)
async def accept(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                 xsrf: str = Form("", alias="_xsrf", max_length=500), code: str = Form("", max_length=1000),
                 next: str = Form("", max_length=2000)) -> Response:
    me = check_form(request, runtime, ident, xsrf)
    # the form sends them as fields; JupyterHub's own form posts back to its URL, so take the query too
    code = code or request.query_params.get("code", "")
    # a form field passed no middleware: take it into the apps' form here (None: outside the base_url)
    next = (inner_next(runtime.settings.base_url, next) or "") if next else request.query_params.get("next", "")
    if not code:
        raise BadRequest("Missing share code")
    async with session.begin():
        invitation = await exchange_code(session, runtime.settings.nats_namespace, code, me.user_id)
    runtime.relay.kick()
    target = validate_next(next, runtime.settings.hub_public_url, default=invitation.url)
    return RedirectResponse(target, status_code=303)
