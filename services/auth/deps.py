"""Typed lifespan state and dependencies of the auth routes: runtime, database session, authenticator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, TypedDict

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.service import Runtime as _Runtime

from services.auth.authenticators import Authenticator


class AuthState(TypedDict):
    """What the auth lifespan hands to every request (`request.state`)."""

    runtime: _Runtime
    authenticator: Authenticator


def _runtime(request: Request) -> _Runtime:
    runtime: _Runtime = request.state.runtime
    return runtime


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.state.authenticator
    return authenticator


async def _session(runtime: Annotated[_Runtime, Depends(_runtime)]) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


Runtime = Annotated[_Runtime, Depends(_runtime)]
DbSession = Annotated[AsyncSession, Depends(_session)]
AuthenticatorDep = Annotated[Authenticator, Depends(_authenticator)]
