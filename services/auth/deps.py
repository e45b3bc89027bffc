"""Typed dependencies of the auth routes: the runtime, a database session, the authenticator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.service import Runtime

from services.auth.authenticators import Authenticator


def _runtime(request: Request) -> Runtime:
    return request.state.runtime  # type: ignore[no-any-return]


def _authenticator(request: Request) -> Authenticator:
    return request.state.authenticator  # type: ignore[no-any-return]


async def _session(runtime: Annotated[Runtime, Depends(_runtime)]) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
DbSession = Annotated[AsyncSession, Depends(_session)]
AuthenticatorDep = Annotated[Authenticator, Depends(_authenticator)]
