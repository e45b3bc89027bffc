"""Telling "PostgreSQL is away" from every other database error.

A restart, a failover, a refused or reset connection, a server still starting, a pool that cannot hand
out a connection in time: the request did nothing (or its transaction is rolled back whole), the client
may send it again, and the HTTP services answer 503 with `Retry-After` (`fleethub.shared.http`), never
a 500. A constraint violation or a bad query is not an outage.
"""

from __future__ import annotations

import traceback

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# asyncpg's own errors for "no usable connection": client side (InterfaceError includes
# ConnectionDoesNotExistError), SQLSTATE class 08 (connection exception), class 57 (admin shutdown,
# crash shutdown, cannot connect now) and class 53 (too many connections, out of resources)
_ASYNCPG_OUTAGE = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                   asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError)
_DRIVER_MODULES = ("asyncpg", "sqlalchemy")


def _raised_by_driver(exc: BaseException) -> bool:
    """Whether `exc` was raised inside asyncpg or SQLAlchemy (a refused connect is a bare OSError)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return any(f"/{name}/" in frame.filename for frame in frames for name in _DRIVER_MODULES)


def _one(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, PoolTimeout):  # every connection busy or being opened: the server is not answering
        return True
    if isinstance(exc, _ASYNCPG_OUTAGE):
        return True
    # a refused, reset or timed-out connect: asyncpg raises the socket's error as it is
    return isinstance(exc, OSError) and _raised_by_driver(exc)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps, SQLAlchemy's `orig` and the cause chain) says PostgreSQL is away."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if _one(item):
            return True
        orig = item.orig if isinstance(item, DBAPIError) else None
        todo += [orig if isinstance(orig, BaseException) else None, item.__cause__, item.__context__]
    return False
