"""The spawner's database pool holds a connection for every command it handles at once and every loop (up to
a cap), so a storm of spawns never queues a lease statement behind the handlers."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from fleethub.services.spawner.app import LOOP_CONNECTIONS, MAX_CONNECTIONS, POOL_SIZE, pool_overflow
from fleethub.shared.db.engine import make_engine
from fleethub.shared.settings import load_settings


def test_the_pool_covers_the_handlers_and_the_loops_up_to_the_cap() -> None:
    few = load_settings(None, spawner={"max_concurrent": 20})
    assert POOL_SIZE + pool_overflow(few) == 20 + LOOP_CONNECTIONS
    assert POOL_SIZE + pool_overflow(load_settings(None)) == MAX_CONNECTIONS  # 64 handlers by default: capped
    assert pool_overflow(load_settings(None, spawner={"max_concurrent": 1})) == POOL_SIZE  # never below the default


async def test_every_connection_of_the_pool_can_be_in_use_at_once(database_url: str) -> None:
    # all of them checked out together: a pool smaller than it says would keep the last ones waiting for one
    # of the others, which wait for them (the pool's timeout, then TimeoutError)
    engine = make_engine(database_url, pool_size=POOL_SIZE, max_overflow=pool_overflow(load_settings(None)))
    together = asyncio.Barrier(MAX_CONNECTIONS)

    async def hold() -> int:
        async with engine.connect() as conn:
            await together.wait()
            return int((await conn.execute(text("SELECT 1"))).scalar_one())

    try:
        async with asyncio.timeout(30):
            assert await asyncio.gather(*(hold() for _ in range(MAX_CONNECTIONS))) == [1] * MAX_CONNECTIONS
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.checkedin() == POOL_SIZE  # the overflow is closed once returned
    finally:
        await engine.dispose()
