"""What every api page template needs besides its own data: the navigation bar of the user who looks."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.services.api.access import load_requester
from fleethub.shared.identity import Identity
from fleethub.shared.templating import Nav, NavLink, Templates


async def nav_for(request: Request, session: AsyncSession, ident: Identity) -> Nav:
    """The navigation bar of `ident`: Admin with `admin-ui`, the `display` services it may access, and the
    change-password link with the password authenticator. Reads the requester's scopes (cached)."""
    req = await load_requester(request, session, ident)
    settings = request.state.runtime.settings
    services = [NavLink(s.name, f"/services/{s.name}/") for s in settings.services
                if s.display and s.url and req.can("access:services", service=s.name)]
    return Nav(user=ident.name, admin=req.can("admin-ui"), services=services,
               change_password=settings.auth.authenticator == "password")


def templates(request: Request) -> Templates:
    """The api process's templates (made once at start)."""
    t: Templates = request.state.templates
    return t
