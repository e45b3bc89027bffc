"""Typed lifespan state and dependencies of the auth routes: runtime, database session, authenticator."""

from __future__ import annotations

from typing import Annotated, TypedDict

from fastapi import Depends, Request

from fleethub.shared.authenticators import Authenticator
from fleethub.shared.http import DbSession, RuntimeDep
from fleethub.shared.service import Runtime as _Runtime

__all__ = ["AuthState", "AuthenticatorDep", "DbSession", "Runtime"]


class AuthState(TypedDict):
    """What the auth lifespan hands to every request (`request.state`)."""

    runtime: _Runtime
    authenticator: Authenticator


async def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.state.authenticator
    return authenticator


Runtime = RuntimeDep
AuthenticatorDep = Annotated[Authenticator, Depends(_authenticator)]
