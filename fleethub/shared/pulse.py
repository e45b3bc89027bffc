"""`Pulse`: a wake-up that idle loops wait on, with a timeout, instead of waking on a short period."""

from __future__ import annotations

import asyncio


class Pulse:
    """Wakes every task waiting at the time of `notify` (unlike an `asyncio.Event`, nothing stays set: a loop
    checks whether it has work, then waits; a notify between two waits is seen by the next check)."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        """Wake the tasks waiting now."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Wait for the next `notify`, at most `timeout` seconds; whether it came."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
            return bool(done)
        finally:
            self._waiters.discard(waiter)
            waiter.cancel()
