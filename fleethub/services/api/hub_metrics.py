"""The hub-wide gauges the api exports, read from PostgreSQL at scrape time.

Every api replica computes the same values from the same rows, so however many replicas run, each
exports the hub's true count: aggregate them with `max()` (never `sum()`), as the dashboard does. Read at
scrape time rather than kept in memory, they need no lease, no election and no event to stay right after
a replica restarts, and cost one short query per scrape.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from fleethub.shared.db.models import DeadLetterRow, OutboxMessage, ServerState, User
from fleethub.shared.lifecycle import ServerStatus
from fleethub.shared.metrics import ACTIVE_PERIODS, Metrics, Refresher
from fleethub.shared.service import Runtime


def hub_gauges(runtime: Runtime, metrics: Metrics) -> Refresher:
    """A refresher of the users, active users, running servers, dead letters and outbox gauges."""
    sessions = runtime.read_sessions or runtime.sessions

    async def refresh_hub_gauges() -> None:
        now = func.now()
        active = [func.count().filter(User.last_activity >= now - timedelta(days=days)).label(period)
                  for period, days in ACTIVE_PERIODS.items()]
        async with sessions() as session:
            users = (await session.execute(select(func.count().label("total"), *active))).one()
            running = await session.scalar(select(func.count()).select_from(ServerState)
                                           .where(ServerState.status == ServerStatus.RUNNING))
            letters = await session.scalar(select(func.count()).select_from(DeadLetterRow))
            outbox = (await session.execute(
                select(func.count(), func.extract("epoch", now - func.min(OutboxMessage.created)))
                .where(OutboxMessage.published_at.is_(None)))).one()
        metrics.total_users.set(users.total)
        for period in ACTIVE_PERIODS:
            metrics.active_users.labels(period=period).set(getattr(users, period))
        metrics.running_servers.set(running or 0)
        metrics.dead_letters.set(letters or 0)
        metrics.outbox_pending.set(outbox[0])
        metrics.outbox_lag.set(max(0.0, float(outbox[1] or 0.0)))

    return refresh_hub_gauges
