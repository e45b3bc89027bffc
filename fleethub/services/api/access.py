"""Who may do what: the requester's effective scopes and JupyterHub's answers when they fall short.

A scope held only for other resources hides the target (404 "No access to resources or resources
not found"); a scope not held at all is a 403 naming the scopes that would do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.errors import Forbidden, NotFound
from fleethub.shared.identity import Identity
from fleethub.shared.rbac import ScopeCache, effective_scopes
from fleethub.shared.scopes import Scope, held_anywhere, name_filter, render, user_filter
from fleethub.shared.service import Runtime

HIDDEN = "No access to resources or resources not found"


@dataclass(frozen=True)
class Requester:
    """An authenticated request: who, and with which effective scopes."""

    ident: Identity
    scopes: frozenset[Scope]

    @property
    def name(self) -> str:
        """The owner's name (a user's or a service's: see `kind`)."""
        return self.ident.name

    @property
    def kind(self) -> str:
        """"user" or "service"."""
        return self.ident.kind

    def is_user(self, name: str) -> bool:
        """Whether the requester is the user `name` (never true for a service of that name)."""
        return self.ident.kind == "user" and self.ident.name == name

    @functools.cached_property
    def _by_name(self) -> dict[str, tuple[Scope, ...]]:
        """The held scopes by name; a name held hub-wide maps to its unfiltered scope alone."""
        out: dict[str, list[Scope]] = {}
        for s in self.scopes:
            out.setdefault(s.name, []).append(s)
        return {name: next(((s,) for s in held if s.kind is None), tuple(held)) for name, held in out.items()}

    def can(self, scope: str, user: str | None = None, server_name: str | None = None, *,
            group: str | None = None, service: str | None = None) -> bool:
        """Whether `scope` is held for the resource: hub-wide, a user, one of a user's servers, a group
        or a service. (Called per field and per item by list endpoints, hence the index by name.)"""
        held = self._by_name.get(scope)
        if not held:
            return False
        if held[0].kind is None:
            return True
        server = f"{user}/{server_name}" if user is not None and server_name is not None else None
        return any(s.covers(user, server, group, service) for s in held)

    def require(self, *scopes: str, user: str | None = None, server_name: str | None = None,
                group: str | None = None, service: str | None = None) -> None:
        """Any one of `scopes` for the resource, or the error JupyterHub would answer.

        Raises:
            NotFound: held only for other resources.
            Forbidden: not held at all.
        """
        if any(self.can(s, user, server_name, group=group, service=service) for s in scopes):
            return
        targeted = user is not None or group is not None or service is not None
        if targeted and any(held_anywhere(self.scopes, s) for s in scopes):
            raise NotFound(HIDDEN)
        raise Forbidden(f"Action is not authorized with current scopes; requires any of {list(scopes)}")

    def users_visible(self, scope: str) -> set[str] | None:
        """For list endpoints: None if `scope` is held hub-wide, else the user names it covers."""
        return user_filter(self.scopes, scope)

    def names_visible(self, scope: str, kind: str) -> set[str] | None:
        """For group/service list endpoints: None if `scope` is held hub-wide, else the names of `kind`
        ("group" | "service") it covers."""
        return name_filter(self.scopes, scope, kind)

    def rendered(self) -> list[str]:
        """The sorted scope strings of `GET /hub/api/user`."""
        return render(self.scopes)


async def load_requester(request: Request, session: AsyncSession, ident: Identity) -> Requester:
    """The effective scopes of `ident` (cached per process, see `ScopeCache`)."""
    cache: ScopeCache = request.state.scope_cache
    runtime: Runtime = request.state.runtime
    return Requester(ident, await effective_scopes(session, ident, cache, runtime.settings.custom_subscopes))
