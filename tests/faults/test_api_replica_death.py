"""An api replica SIGKILLed under steady reads through a proxy node: no request that changes nothing fails.

Found by the soak (bench/soak): within a second of an api replica's kill, a few GETs answered 502 (the
request was in flight on, or went out on a pooled connection to, the dead replica) or 503 "nothing is
answering" although the other replica was up (the request had used its one retry on the stale pooled
connection before the fresh one was refused). A proxy node now sends such a request to another replica.
"""

from __future__ import annotations

import asyncio
import collections

import httpx
import pytest

from tests.support.faultstack import FaultStack

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_reads_survive_the_kill_of_an_api_replica(stack: FaultStack) -> None:
    await stack.create_users(*(f"reader{i}" for i in range(5)))
    answers: collections.Counter[str] = collections.Counter()
    after_kill: collections.Counter[str] = collections.Counter()
    killed = asyncio.Event()
    done = asyncio.Event()

    async def reader(n: int) -> None:
        # each reader keeps its connections to the proxy; the proxy keeps pooled ones to both replicas
        async with stack.client(node=n % 2) as client:
            while not done.is_set():
                try:
                    r = await client.get("/users", params={"limit": 5})
                    outcome = str(r.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                answers[outcome] += 1
                if killed.is_set():
                    after_kill[outcome] += 1

    readers = [asyncio.create_task(reader(n)) for n in range(6)]
    try:
        await asyncio.sleep(2)  # both replicas served some of them: the proxies hold pooled connections to each
        stack["api-0"].kill()
        killed.set()
        await asyncio.sleep(4)
    finally:
        done.set()
        await asyncio.gather(*readers)
    assert set(answers) == {"200"}, f"answers: {dict(answers)}\n{stack.logs()}"
    assert after_kill["200"] >= 20, dict(after_kill)
    await stack.oracle.converged()
