"""Which failures are transient: a dependency that is away (NATS, PostgreSQL, the network) rather than a
message or a bug that fails the same way every time. Consumers retry the first kind without a bound (with
backoff) and dead-letter the second after a few tries."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import exc as sa_exc

from fleethub.shared.errors import BusError

_ASYNCPG_AWAY: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # refused, reset, "the database system is starting up"
    asyncpg.exceptions.InterfaceError,  # the connection is closed
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, cannot connect now
)

_AWAY: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, BusError, sa_exc.TimeoutError,
                                          sa_exc.InterfaceError, sa_exc.DisconnectionError, *_ASYNCPG_AWAY)


def transient(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says a dependency is away, so the same work may succeed later.

    Network errors (`OSError`, timeouts), `BusError` and PostgreSQL connection errors are transient; a
    statement PostgreSQL refuses (bad data, a NUL character) or any other exception is not.
    """
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:  # follow the wrapped causes (SQLAlchemy wraps the driver's error)
        if isinstance(cur, _AWAY):
            return True
        if isinstance(cur, sa_exc.DBAPIError) and cur.connection_invalidated:
            return True
        cur = getattr(cur, "orig", None) or cur.__cause__
        seen += 1
    return False
