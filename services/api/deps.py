"""Typed dependencies of the api routes: runtime, database session, who is asking."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from shared.errors import Forbidden
from shared.http import DbSession, RuntimeDep
from shared.identity import Identity

from services.api.credentials import api_identity, page_identity
from services.api.waiters import Waiters


def _waiters(request: Request) -> Waiters:
    return request.state.waiters  # type: ignore[no-any-return]


WaitersDep = Annotated[Waiters, Depends(_waiters)]


async def _current(request: Request, runtime: RuntimeDep, session: DbSession) -> Identity:
    ident = await api_identity(request, runtime, session)
    # end the read transaction, so handlers start their own with `session.begin()`
    await session.rollback()
    if ident is None:
        raise Forbidden("Missing or invalid credentials.")
    return ident


async def _maybe_page_user(request: Request, session: DbSession) -> Identity | None:
    ident = await page_identity(request, session)
    await session.rollback()
    return ident


CurrentIdentity = Annotated[Identity, Depends(_current)]
PageUser = Annotated[Identity | None, Depends(_maybe_page_user)]
