"""`/hub/accept-share`: a logged-in user accepts a share code (confirmation page, then an XSRF-checked POST)."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleethub.services.api.browser import check_form, form_xsrf, login_redirect, with_xsrf
from fleethub.services.api.deps import PageUser, Runtime
from fleethub.services.api.shares import ACCEPT_PATH, Invitation, exchange_code, find_invitation
from fleethub.shared.errors import BadRequest, Forbidden, NotFound
from fleethub.shared.http import DbSession
from fleethub.shared.identity import validate_next

router = APIRouter()

_STYLE = "body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto}.err{color:#b00}"


def _accept_page(user: str, invitation: Invitation, code: str, next_url: str, xsrf: str) -> str:
    """The invitation: whose server, which scopes, and the form that accepts it."""
    server = invitation.url
    label = f"{invitation.owner}'s server" + (f" ({invitation.server_name})" if invitation.server_name else "")
    warning = "" if invitation.ready else (
        f'<p class="err">The server at {escape(server)} is not running now. After accepting, you may need to ask '
        f"{escape(invitation.owner)} to start it before you can use it.</p>")
    scopes = "".join(f"<li><code>{escape(s)}</code></li>" for s in invitation.scopes)
    hidden = "".join(f'<input type="hidden" name="{name}" value="{escape(value, quote=True)}">'
                     for name, value in (("_xsrf", xsrf), ("code", code), ("next", next_url)))
    body = (
        f"<h1>Accept sharing invitation</h1><p>You ({escape(user)}) have been invited to access {escape(label)} "
        f'at <a href="{escape(server, quote=True)}">{escape(server)}</a>.</p>{warning}'
        f"<p>Accepting grants you these permissions, restricted to this server:</p><ul>{scopes}</ul>"
        f'<form method="post" action="{ACCEPT_PATH}">{hidden}<input type="submit" value="Accept invitation"></form>'
        f'<p>Afterwards you go to <a href="{escape(next_url, quote=True)}">{escape(next_url)}</a>.</p>'
    )
    return (f"<!doctype html><html><head><meta charset=utf-8><title>Accept sharing invitation - fleethub</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


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
    page = _accept_page(ident.name, invitation, code, target, xsrf)
    return with_xsrf(request, runtime, HTMLResponse(page, headers={"Cache-Control": "no-store"}), xsrf)


@router.post(ACCEPT_PATH)
async def accept(request: Request, runtime: Runtime, session: DbSession, ident: PageUser,
                 xsrf: str = Form("", alias="_xsrf", max_length=500), code: str = Form("", max_length=1000),
                 next: str = Form("", max_length=2000)) -> Response:
    me = check_form(request, runtime, ident, xsrf)
    # the form sends them as fields; JupyterHub's own form posts back to its URL, so take the query too
    code = code or request.query_params.get("code", "")
    next = next or request.query_params.get("next", "")
    if not code:
        raise BadRequest("Missing share code")
    async with session.begin():
        invitation = await exchange_code(session, runtime.settings.nats_namespace, code, me.user_id)
    runtime.relay.kick()
    target = validate_next(next, runtime.settings.hub_public_url, default=invitation.url)
    return RedirectResponse(target, status_code=303)
