"""Webhooks end to end: every service a real process on an auth-enabled NATS (two api replicas deliver the
webhooks as the api identity), a real HTTP receiver on 127.0.0.1 that is down for 10 s while servers are
spawned and stopped, and a receiver that always fails; checked against the events stream as `fleethub
events` reads it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import select

from fleethub.services.api.webhooks import handler
from fleethub.shared.bus import Decision, Delivery
from fleethub.shared.bus.natsconfig import seed_file
from fleethub.shared.db.engine import make_engine, make_sessionmaker
from fleethub.shared.db.models import DeadLetterRow
from fleethub.shared.events import UserCreated, wrap
from fleethub.shared.net import free_port
from fleethub.shared.webhook_settings import WebhookSettings
from fleethub.shared.webhook_signature import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, verify
from tests.support.cluster import FAKE_SERVER, Cluster, env_without_fleethub, mint_token, running_stack, wait_for
from tests.support.securenats import SecureNats, secure_nats
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

NS = "hook"
SECRET = "receiver-secret-0123456789"
TYPES = ("server.*", "user.created")
DOWN_FOR = 10.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def failing() -> Iterator[Receiver]:
    r = Receiver(status=500)
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[SecureNats]:
    with secure_nats(tmp_path / "securenats", NS, webhooks=("audit", "failing")) as server:
        yield server


@pytest.fixture
async def cluster(tmp_path: Path, secure: SecureNats, database_url: str, receiver: Receiver,
                  failing: Receiver) -> AsyncIterator[Cluster]:
    webhooks = [
        {"name": "audit", "url": f"{receiver.url}/hooks/fleethub", "events": list(TYPES), "secret": SECRET,
         "backoff_first": 0.5, "backoff_cap": 2.0},
        {"name": "failing", "url": failing.url, "events": ["user.created"], "secret": "another-secret-0123456",
         "max_attempts": 3, "backoff_first": 0.2, "backoff_cap": 0.5},
    ]
    async with running_stack(
        tmp_path, secure.url, database_url, NS, start=(),
        passwords={"admin": "admin-pass-456"},
        auth={"authenticator": "password", "admin_users": ["admin"]},
        api={"slow_spawn_timeout": 5},
        spawner={"cmd": [sys.executable, str(FAKE_SERVER)], "lease_ttl": 2},
        proxy={"port": free_port()},
        webhooks=webhooks,
    ) as c:
        # two api replicas share each webhook's durable consumer: every event still goes out once
        for service in ("spawner", "proxy", "auth", "api", "api"):
            c.start(service, nats_nkey_file=str(seed_file(secure.keys, service)))
        yield c


def _stream_events(cluster: Cluster, secure: SecureNats) -> list[dict[str, Any]]:
    """The hook's events as stored, in stream order, read by `fleethub events` as the events account."""
    env = {**env_without_fleethub(), "FLEETHUB_NATS_URL": secure.url, "FLEETHUB_NATS_NAMESPACE": NS}
    types = [a for t in TYPES for a in ("--type", t)]
    out = subprocess.run([sys.executable, "-m", "fleethub", "events", *types, "--nkey-file",
                          str(seed_file(secure.keys, "events"))], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


async def _spawned(api: httpx.AsyncClient, user: str, cluster: Cluster) -> None:
    r = await api.post(f"/hub/api/users/{user}/server")
    assert r.status_code in (201, 202), r.text

    async def ready() -> bool:
        return bool((await api.get(f"/hub/api/users/{user}")).json()["servers"].get("", {}).get("ready"))

    await wait_for(ready, timeout=30, what=f"{user}'s server ready\n{cluster.logs()}")


async def _stopped(api: httpx.AsyncClient, user: str) -> None:
    r = await api.delete(f"/hub/api/users/{user}/server")
    assert r.status_code in (202, 204), r.text

    async def gone() -> bool:
        return "" not in (await api.get(f"/hub/api/users/{user}")).json()["servers"]

    await wait_for(gone, timeout=30, what=f"{user}'s server stopped")


def _delivered(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.snapshot()]


async def test_a_receiver_down_for_10s_gets_every_event_once_in_order_signed(
        cluster: Cluster, secure: SecureNats, receiver: Receiver, failing: Receiver, database_url: str) -> None:
    await cluster.wait_hub(timeout=40)
    hub = f"http://127.0.0.1:{cluster.settings.proxy.port}"
    headers = {"Authorization": f"token {mint_token(cluster.settings, 'admin')}"}
    async with httpx.AsyncClient(base_url=hub, headers=headers, timeout=15) as api:
        assert (await api.post("/hub/api/users", json={"usernames": ["alice", "bob"]})).status_code == 201
        await _spawned(api, "alice", cluster)
        async def ready_delivered() -> bool:
            return any(e["type"] == "server.ready" for e in _delivered(receiver))

        await wait_for(ready_delivered, timeout=30, what=f"alice's server.ready delivered\n{cluster.logs()}")

        receiver.stop()
        down_at = time.monotonic()
        await _spawned(api, "bob", cluster)
        await _stopped(api, "alice")
        await _stopped(api, "bob")
        await asyncio.sleep(max(0.0, DOWN_FOR - (time.monotonic() - down_at)))
        while_down = len(receiver.snapshot())
        receiver.start()

    async def caught_up() -> bool:
        got = _delivered(receiver)
        return any(e["type"] == "server.stopped" and e["data"]["user"] == "bob" for e in got)

    await wait_for(caught_up, timeout=60, interval=0.2, what=f"bob's server.stopped delivered\n{cluster.logs()}")
    stored = _stream_events(cluster, secure)
    delivered = _delivered(receiver)
    # every event once, in the stream's order (so in order per server), none lost while the receiver was down
    assert [e["id"] for e in delivered] == [e["id"] for e in stored]
    assert len(delivered) > while_down  # most of them came after the receiver was back
    assert delivered == stored  # the body is the envelope as documented
    for user in ("alice", "bob"):
        types = [e["type"] for e in delivered if e["type"] != "user.created" and e["data"]["user"] == user]
        assert types[-2:] == ["server.ready", "server.stopped"] and set(types) <= {"server.progress",
                                                                                  "server.ready", "server.stopped"}
    assert sorted(e["data"]["name"] for e in delivered if e["type"] == "user.created") == ["alice", "bob"]

    for post in receiver.snapshot():
        assert post.path == "/hooks/fleethub"
        body = json.loads(post.body)
        assert post.headers[EVENT_ID_HEADER] == body["id"] and post.headers[EVENT_TYPE_HEADER] == body["type"]
        assert post.headers["Content-Type"] == "application/json"
        assert verify(SECRET, post.headers[SIGNATURE_HEADER], post.body)
        assert not verify("not-the-receivers-secret", post.headers[SIGNATURE_HEADER], post.body)
        assert not verify(SECRET, post.headers[SIGNATURE_HEADER], post.body + b" ")

    # the failing receiver: each user.created tried max_attempts (3) times, then a dead letter
    engine = make_engine(database_url, pool_size=1)
    try:
        async def dead() -> list[DeadLetterRow]:
            async with make_sessionmaker(engine)() as s:
                return list((await s.execute(select(DeadLetterRow).where(
                    DeadLetterRow.consumer == "webhook-failing"))).scalars())

        await wait_for(lambda: _two(dead), timeout=30, what=f"two dead letters\n{cluster.logs()}")
        letters = await dead()
        assert all("HTTP 500" in d.reason and d.num_delivered == 3 for d in letters), [d.reason for d in letters]
    finally:
        await engine.dispose()
    assert sorted(json.loads(p.body)["data"]["name"] for p in failing.snapshot()) == ["alice"] * 3 + ["bob"] * 3
    assert secure.violations() == [], secure.violations()


async def _two(dead: Any) -> bool:
    return len(await dead()) == 2


async def test_a_receiver_slower_than_the_timeout_is_a_failed_delivery() -> None:
    # a 200 whose body drips a byte every 0.3 s for 3 s: each read is within httpx's per-read timeout (0.5 s),
    # so a nak proves the whole POST was cut at the webhook's timeout
    slow = Receiver(status=200, delay=3.0)
    slow.start()
    try:
        hook = WebhookSettings.model_validate({"name": "slow", "url": slow.url, "secret": SECRET, "timeout": 0.5})
        async with httpx.AsyncClient() as client:
            delivery = Delivery(wrap(UserCreated(name="ann")), UserCreated(name="ann"), 1, cast(Any, None))
            assert await handler(hook, client)(delivery) == Decision.nak(hook.backoff(1))
        assert len(slow.snapshot()) == 1
    finally:
        slow.stop()
