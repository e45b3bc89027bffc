"""Async engines and sessions, created by a service's lifespan (never at import time)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine for `url` (SQLAlchemy form, postgresql+asyncpg://…).

    No ping on checkout: it cost three round trips (BEGIN, SELECT 1, ROLLBACK) per request. A
    connection found dead on use makes SQLAlchemy renew the whole pool, and that one request gets a
    503 asking for a retry (`fleethub.shared.http.CommonHeaders`); connections are also recycled every 10 minutes.
    """
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=600)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
