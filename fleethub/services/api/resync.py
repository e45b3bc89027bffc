"""`POST/PATCH /hub/api/proxy`: reconcile the route table with PostgreSQL now.

It runs the reconciliation round of `fleethub.shared.routes` (the spawner workers' code, under the same
cluster-wide lock), so the api writes exactly what a spawner worker would have written on its next round.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.routes import reconcile_round
from fleethub.shared.service import Runtime


async def resync_routes(runtime: Runtime, session: AsyncSession) -> tuple[int, int]:
    """Put missing or stale routes and delete orphans; returns (put, deleted)."""
    await session.rollback()  # the request's read session is not needed: the round uses its own
    done = await reconcile_round(runtime.engine, runtime.sessions, runtime.bus, runtime.settings.services, wait=True)
    return done or (0, 0)
