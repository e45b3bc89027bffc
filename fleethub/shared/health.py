"""`/hub/health` of the HTTP services: whether this replica can reach its dependencies right now.

The answer is always 200 with a JSON body while the process serves: `{"status": "ok"}`, or
`{"status": "degraded", "database": "unavailable", "bus": "ok", "message": "..."}` naming what is away.
Not a 503: a liveness probe that restarted every replica while PostgreSQL restarts would only add
restarts, and a balancer with no healthy replica left would answer with its own error instead of the
replica's JSON 503. Requests that need the missing dependency answer 503 themselves.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from fleethub.shared.db.outage import database_unavailable
from fleethub.shared.service import Runtime

CHECK_TIMEOUT = 2.0


async def _database_ok(runtime: Runtime) -> bool:
    # twice: the first use of a pool after a PostgreSQL restart fails on a dead connection and renews the pool
    for _ in range(2):
        try:
            async with asyncio.timeout(CHECK_TIMEOUT), runtime.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except TimeoutError:
            return False
        except Exception as exc:
            if not database_unavailable(exc):
                raise
    return False


async def health_report(runtime: Runtime) -> dict[str, Any]:
    """This replica's view of its dependencies, as `/hub/health` answers it."""
    checks = {
        "database": "ok" if await _database_ok(runtime) else "unavailable",
        "bus": "ok" if runtime.bus.healthy.is_set() else "unavailable",
    }
    down = [name for name, state in checks.items() if state != "ok"]
    if not down:
        return {"status": "ok", **checks}
    named = {"database": "the database (PostgreSQL)", "bus": "the message bus (NATS)"}
    message = " and ".join(named[name] for name in down) + (" is" if len(down) == 1 else " are") + " unavailable"
    return {"status": "degraded", **checks, "message": message}
