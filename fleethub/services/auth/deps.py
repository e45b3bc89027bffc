"""Typed lifespan state and dependencies of the auth routes: runtime, database session, authenticator."""

from __future__ import annotations

from typing import Annotated, TypedDict

from fastapi import Depends, Request

from fleethub.shared.authenticators import Authenticator
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.http import DbSession, RuntimeDep
from fleethub.shared.logins import PostAuthHook
from fleethub.shared.service import Runtime as _Runtime
from fleethub.shared.templating import Templates

__all__ = ["AuthState", "AuthenticatorDep", "CryptDep", "DbSession", "PostAuthDep", "Runtime"]


class AuthState(TypedDict):
    """What the auth lifespan hands to every request (`request.state`)."""

    runtime: _Runtime
    authenticator: Authenticator
    crypt: AuthStateCrypt
    post_auth: PostAuthHook
    templates: Templates


async def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.state.authenticator
    return authenticator


async def _crypt(request: Request) -> AuthStateCrypt:
    crypt: AuthStateCrypt = request.state.crypt
    return crypt


async def _post_auth(request: Request) -> PostAuthHook:
    hook: PostAuthHook = request.state.post_auth
    return hook


Runtime = RuntimeDep
AuthenticatorDep = Annotated[Authenticator, Depends(_authenticator)]
CryptDep = Annotated[AuthStateCrypt, Depends(_crypt)]
PostAuthDep = Annotated[PostAuthHook, Depends(_post_auth)]
