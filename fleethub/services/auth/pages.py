"""The auth pages, rendered from the templates (`fleethub/templates/`, overridable through `[pages]
template_paths`): login.html, signup.html, change_password.html, oauth.html (the consent page), error.html.
Jinja2 escapes every value where it is rendered."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.identity import Identity
from fleethub.shared.rbac import effective_scopes
from fleethub.shared.scopes import held_for
from fleethub.shared.settings import ServiceSettings
from fleethub.shared.templating import Nav, NavLink, Templates

EXPIRED_FORM = "Your session expired or the form was not sent from this site; please try again."


def templates(request: Request) -> Templates:
    """The auth process's templates (made once at start)."""
    t: Templates = request.state.templates
    return t


async def nav_for(session: AsyncSession, settings: ServiceSettings, ident: Identity) -> Nav:
    """The navigation bar of a logged-in user on an auth page: as the api's (`fleethub.services.api.
    page_context.nav_for`), from the user's scopes read from the database (auth keeps no scope cache; its
    pages with a user — change password, consent — are rare)."""
    held = await effective_scopes(session, ident, None, settings.custom_subscopes)
    services = [NavLink(s.name, f"/services/{s.name}/") for s in settings.services
                if s.display and s.url and held_for(held, "access:services", service=s.name)]
    return Nav(user=ident.name, admin=held_for(held, "admin-ui"), services=services,
               change_password=settings.auth.authenticator == "password")


def login_page(t: Templates, xsrf: str, next_url: str, *, error: str = "", username: str = "", signup: bool = False,
               login_service: str = "") -> str:
    """The login form, or (`login_service` set: a redirect login) the "Sign in with …" button; `next_url` must
    already be validated (it is also escaped here). The visitor is not logged in: no navigation."""
    query = f"?next={quote(next_url, safe='/')}"
    return t.render("login.html", xsrf=xsrf, error=error, username=username, signup=signup,
                    login_service=login_service, login_url=f"/hub/oauth_login{query}",
                    form_action=f"/hub/login{query}")


def signup_page(t: Templates, xsrf: str, *, error: str = "", username: str = "", done: str = "",
                pending: bool = False) -> str:
    """The sign-up form, or its confirmation (`pending`: the account waits for an admin's approval)."""
    return t.render("signup.html", xsrf=xsrf, error=error, username=username, done=done, pending=pending)


def change_password_page(t: Templates, xsrf: str, nav: Nav, *, error: str = "", done: bool = False) -> str:
    """The logged-in user's change-password form (the current password, the new one twice), or its confirmation."""
    return t.render("change_password.html", nav=nav, xsrf=xsrf, error=error, done=done)


def error_page(t: Templates, status: int, message: str, *, retry: bool = False, nav: Nav | None = None) -> str:
    """An error of the auth pages (an OAuth request that can not be honoured, a refused login); `retry`:
    offer to sign in again (as another user)."""
    return t.render("error.html", nav=nav, status=status, message=message, url="", retry=retry)


def consent_page(t: Templates, xsrf: str, nav: Nav, what: str, fields: dict[str, str],
                 scopes: list[tuple[str, str]] | None = None) -> str:
    """Asks the user before identifying them to `what` (an OAuth client that is not their own server);
    `scopes`: what its token would hold, each as (scope, its description); the form posts the authorization
    request back with the XSRF token."""
    return t.render("oauth.html", nav=nav, xsrf=xsrf, what=what, fields=fields, scopes=scopes or [])
