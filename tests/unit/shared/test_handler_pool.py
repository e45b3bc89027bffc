"""The spawner's database pool holds a connection for every command it handles at once and every loop (up to
a cap), so a storm of spawns never queues a lease statement behind the handlers."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from fleethub.shared.db.engine import (
    HANDLER_POOL_KEPT,
    HANDLER_POOL_LOOPS,
    HANDLER_POOL_MOST,
    handler_pool,
    make_engine,
)


def _total(pool: tuple[int, int]) -> int:
    return pool[0] + pool[1]


def test_the_pool_covers_the_handlers_and_the_loops_up_to_the_cap() -> None:
    assert _total(handler_pool(20)) == 20 + HANDLER_POOL_LOOPS
    assert _total(handler_pool(64)) == HANDLER_POOL_MOST  # the spawner's 64 handlers by default: capped
    assert handler_pool(1) == (HANDLER_POOL_KEPT, HANDLER_POOL_KEPT)  # never below make_engine's default


async def test_every_connection_of_the_pool_can_be_in_use_at_once(database_url: str) -> None:
    # all of them checked out together: a pool smaller than it says would keep the last ones waiting for one
    # of the others, which wait for them (the pool's timeout, then TimeoutError)
    kept, overflow = handler_pool(64)
    engine = make_engine(database_url, pool_size=kept, max_overflow=overflow)
    together = asyncio.Barrier(kept + overflow)

    async def hold() -> int:
        async with engine.connect() as conn:
            await together.wait()
            return int((await conn.execute(text("SELECT 1"))).scalar_one())

    try:
        async with asyncio.timeout(30):
            assert await asyncio.gather(*(hold() for _ in range(kept + overflow))) == [1] * (kept + overflow)
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.checkedin() == kept  # the overflow is closed once returned
    finally:
        await engine.dispose()
