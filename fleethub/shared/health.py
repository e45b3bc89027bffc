"""`/hub/health` of the HTTP services: whether this replica can reach its dependencies right now.

The answer is always 200 with a JSON body while the process serves: `{"status": "ok"}`, or
`{"status": "degraded", "database": "unavailable", "bus": "ok", "message": "..."}` naming what is away,
with `consumers` giving each durable consumer of the replica as "bound" or "unbound" (degraded when one
is unbound). Probes that must fail use `/health/ready` instead (`fleethub.shared.ops`).
Not a 503: a liveness probe that restarted every replica while PostgreSQL restarts would only add
restarts, and a balancer with no healthy replica left would answer with its own error instead of the
replica's JSON 503. Requests that need the missing dependency answer 503 themselves.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.shared.db.outage import database_unavailable
from fleethub.shared.http import RuntimeDep
from fleethub.shared.ops import LIVE
from fleethub.shared.service import Runtime

CHECK_TIMEOUT = 2.0


async def database_ok(engine: AsyncEngine) -> bool:
    """Whether `engine` reaches PostgreSQL now (`SELECT 1`, within `CHECK_TIMEOUT`)."""
    # twice: the first use of a pool after a PostgreSQL restart fails on a dead connection and renews the pool
    for _ in range(2):
        try:
            async with asyncio.timeout(CHECK_TIMEOUT), engine.connect() as conn:
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
        "database": "ok" if await database_ok(runtime.engine) else "unavailable",
        "bus": "ok" if runtime.bus.healthy.is_set() else "unavailable",
    }
    # the durable consumers of this replica: "unbound" while one is not (yet, or again) bound on the server
    consumers = {name: "bound" if bound.is_set() else "unbound"
                 for name, bound in sorted(runtime.bus.consumers.items())}
    down = [name for name, state in checks.items() if state != "ok"]
    unbound = [name for name, state in consumers.items() if state != "bound"]
    if not down and not unbound:
        return {"status": "ok", **checks, "consumers": consumers}
    named = {"database": "the database (PostgreSQL)", "bus": "the message bus (NATS)"}
    parts = []
    if down:
        parts.append(" and ".join(named[name] for name in down) + (" is" if len(down) == 1 else " are")
                     + " unavailable")
    if unbound:
        parts.append("durable consumer(s) not bound: " + ", ".join(unbound))
    return {"status": "degraded", **checks, "consumers": consumers, "message": "; ".join(parts)}


def probe_router() -> APIRouter:
    """`/health/live` and `/health/ready` on an HTTP service's own listener (for probes that reach the replica
    directly; the proxy does not route them): liveness answers while the event loop does, readiness is
    503 with the missing dependency named until the replica's checks pass (`fleethub.shared.ops`)."""
    router = APIRouter()

    @router.get("/health/live")
    async def live() -> dict[str, str]:
        return dict(LIVE)

    @router.get("/health/ready")
    async def ready(runtime: RuntimeDep) -> JSONResponse:
        ok, body = await runtime.readiness.report()
        return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

    return router
