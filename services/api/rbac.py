"""Roles and the scopes principals hold through them, their groups and shares."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import AccessChanged
from shared.outbox import enqueue


def access_changed(session: AsyncSession, namespace: str, *, users: Iterable[str] = (),
                   services: Iterable[str] = (), everyone: bool = False) -> None:
    """Announce (with the transaction that changes them) that these principals' scopes may have changed;
    every api replica then forgets their cached scopes."""
    enqueue(session, AccessChanged(users=sorted(set(users)), services=sorted(set(services)), everyone=everyone),
            namespace)
