"""Async engines and sessions, created by a service's lifespan (never at import time)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 10.0


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> AsyncEngine:
    """An asyncpg engine for `url` (SQLAlchemy form, postgresql+asyncpg://…).

    No ping on checkout: it cost three round trips (BEGIN, SELECT 1, ROLLBACK) per request. A
    connection found dead on use makes SQLAlchemy invalidate every connection of the pool opened before
    it (PostgreSQL restarted: they are all dead), and that one request gets a 503 asking for a retry
    (`fleethub.shared.http.CommonHeaders`); the next checkout opens a fresh connection, so the pool recovers
    without a restart of the service. Connections are also recycled every 10 minutes.

    Bounded waits, so that a request answers 503 in seconds while PostgreSQL is away rather than hanging:
    opening a connection gives up after `CONNECT_TIMEOUT` (asyncpg's default is 60 s; a refused
    connection fails at once anyway), waiting for a free pooled connection after `POOL_TIMEOUT`.

    `pool_size` connections are kept open once opened, up to `max_overflow` (default: `pool_size`) more are
    opened while they are all in use.
    """
    return create_async_engine(url, pool_size=pool_size,
                               max_overflow=pool_size if max_overflow is None else max_overflow, pool_recycle=600,
                               pool_timeout=POOL_TIMEOUT, connect_args={"timeout": CONNECT_TIMEOUT})


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
