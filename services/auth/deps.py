"""Typed dependencies of the auth routes: the runtime, a database session, the authenticator."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.http import DbSession, RuntimeDep

from services.auth.authenticators import Authenticator

__all__ = ["AuthenticatorDep", "DbSession", "RuntimeDep"]


def _authenticator(request: Request) -> Authenticator:
    return request.state.authenticator  # type: ignore[no-any-return]


AuthenticatorDep = Annotated[Authenticator, Depends(_authenticator)]
