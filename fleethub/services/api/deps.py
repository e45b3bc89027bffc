"""Typed lifespan state and dependencies of the api routes: runtime, database session, who is asking."""

from __future__ import annotations

from typing import Annotated, TypedDict

from fastapi import Depends, Request

from fleethub.services.api.access import Requester, load_requester
from fleethub.services.api.activity import TokenUse
from fleethub.services.api.credentials import api_identity, page_identity
from fleethub.services.api.fastread import FastReads
from fleethub.services.api.waiters import Waiters as _Waiters
from fleethub.shared.authenticators import Authenticator
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.errors import Forbidden
from fleethub.shared.http import DbSession, ReadSession, RuntimeDep
from fleethub.shared.identity import Identity, TokenCache
from fleethub.shared.rbac import ScopeCache
from fleethub.shared.service import Runtime as _Runtime
from fleethub.shared.templating import Templates

__all__ = ["ApiState", "Crypt", "CurrentUser", "DbSession", "PageUser", "ReadSession", "Runtime", "Waiters"]


class ApiState(TypedDict):
    """What the api lifespan hands to every request (`request.state`)."""

    runtime: _Runtime
    waiters: _Waiters
    token_cache: TokenCache
    scope_cache: ScopeCache
    fast_reads: FastReads
    token_use: TokenUse
    crypt: AuthStateCrypt
    authenticator: Authenticator
    templates: Templates


async def _waiters(request: Request) -> _Waiters:
    waiters: _Waiters = request.state.waiters
    return waiters


async def _crypt(request: Request) -> AuthStateCrypt:
    crypt: AuthStateCrypt = request.state.crypt
    return crypt


Runtime = RuntimeDep
Waiters = Annotated[_Waiters, Depends(_waiters)]
Crypt = Annotated[AuthStateCrypt, Depends(_crypt)]
"""The auth_state keys (`auth.crypt_key`)."""


async def _base_url(runtime: Runtime) -> str:
    return runtime.settings.base_url


BaseUrl = Annotated[str, Depends(_base_url)]
"""The hub's `base_url` (what URLs in answers are prefixed with)."""


async def _current(request: Request, runtime: Runtime, session: DbSession) -> Requester:
    ident = await api_identity(request, runtime.secret_key, session)
    if ident is None:
        await session.rollback()
        raise Forbidden("Missing or invalid credentials.")
    token_use: TokenUse = request.state.token_use
    token_use.note(ident)
    req = await load_requester(request, session, ident)
    # end the read transaction, so handlers start their own with `session.begin()`
    await session.rollback()
    return req


async def _maybe_page_user(request: Request, session: DbSession) -> Identity | None:
    ident = await page_identity(request, session)
    await session.rollback()
    return ident


CurrentUser = Annotated[Requester, Depends(_current)]
PageUser = Annotated[Identity | None, Depends(_maybe_page_user)]
