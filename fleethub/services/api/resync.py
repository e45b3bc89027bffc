"""`POST/PATCH /hub/api/proxy`: reconcile the route table with PostgreSQL now.

Only the spawner may write routes (bus permissions), so the api asks a spawner worker to run its
reconciliation round at once (`fleethub.shared.routes.request_reconciliation`) and answers what it did.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.http import require_bus
from fleethub.shared.routes import request_reconciliation
from fleethub.shared.service import Runtime


async def resync_routes(runtime: Runtime, session: AsyncSession) -> tuple[int, int]:
    """Put missing or stale routes and delete orphans (through a spawner worker); returns (put, deleted).

    Raises:
        BusError: NATS is away (503). Unavailable: no spawner worker answered (503).
    """
    require_bus(runtime)  # asking a spawner worker goes over the bus
    await session.rollback()  # the request's read session is not needed while the spawner works
    return await request_reconciliation(runtime.bus)
