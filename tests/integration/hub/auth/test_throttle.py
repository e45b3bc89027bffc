"""Password guessing is throttled per user name and per client address, in PostgreSQL (every replica counts
into the same rows), at `/hub/login` and in the token API's `auth` body; a success resets the name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fleethub.services.auth.app import create_app as create_auth
from fleethub.shared.db.models import LoginThrottle
from fleethub.shared.settings import ServiceSettings
from tests.support.hub import BASE_URL, PASSWORDS, XSRF_FIELD, Hub, _with_state, hub_settings, running_hub

pytestmark = pytest.mark.integration

BASE = 1.0  # long enough for the "at once" checks on a loaded machine
THROTTLE = {"throttle_free_attempts": 2, "throttle_client_free_attempts": 6, "throttle_base_delay_seconds": BASE,
            "throttle_max_delay_seconds": 4 * BASE, "throttle_client_max_delay_seconds": 4 * BASE}


@pytest.fixture
async def hub(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Hub]:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth=THROTTLE)
    async with running_hub(settings) as h:
        yield h


def _client(hub: Hub, address: str, app: Any = None) -> httpx.AsyncClient:
    """A browser at `address` (as the proxy reports it to the services)."""
    target = app if app is not None else hub.transport.app  # type: ignore[attr-defined]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=target, client=(address, 40000)), base_url=BASE_URL)


async def _login(c: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    page = await c.get("/hub/login")
    m = XSRF_FIELD.search(page.text)
    assert m, page.text
    return await c.post("/hub/login", data={"username": user, "password": password, "_xsrf": m.group(1)})


async def _row(hub: Hub, scope: str, key: str) -> tuple[int, datetime, datetime] | None:
    async with hub.sessions() as s:
        row = (await s.execute(select(LoginThrottle.failures, LoginThrottle.last_attempt, LoginThrottle.blocked_until)
                               .where(LoginThrottle.scope == scope, LoginThrottle.key == key))).first()
    return (row[0], row[1], row[2]) if row else None


async def _wait_out(hub: Hub, scope: str, key: str) -> float:
    """Sleep until the row's wait is over; returns the wait it had (seconds after its last counted attempt)."""
    row = await _row(hub, scope, key)
    assert row is not None
    await asyncio.sleep(max(0.0, (row[2] - row[1]).total_seconds()) + 0.05)
    return (row[2] - row[1]).total_seconds()


def _throttled(r: httpx.Response) -> bool:
    return r.status_code == 429 and "Too many failed login attempts" in r.text and int(r.headers["Retry-After"]) >= 1


async def test_delay_grows_per_user_up_to_the_cap_and_resets_on_success(hub: Hub) -> None:
    waits = []
    async with _client(hub, "10.0.0.1") as c, _client(hub, "10.0.0.2") as other:
        for _ in range(2):  # free
            assert (await _login(c, "alice", "wrong-password")).status_code == 403
        for i in range(4):
            r = await _login(c, "alice", "wrong-password")
            assert _throttled(r), r.text  # at once: it must wait
            assert _throttled(await _login(other, "alice", "wrong-password"))  # per user: from anywhere
            r = await _login(c, "alice", PASSWORDS["alice"])  # even the right password is not checked
            assert _throttled(r) and "jupyterhub-hub-login" not in r.cookies
            waits.append(await _wait_out(hub, "user", "alice"))
            guesser = other if i % 2 else c  # (each address stays under its own allowance)
            assert (await _login(guesser, "alice", "wrong-password")).status_code == 403  # after the wait: checked
        # doubling, then capped (each wait runs from the failure's answer, after the password check's time)
        for wait, expected in zip(waits, [BASE, 2 * BASE, 4 * BASE, 4 * BASE], strict=True):
            assert expected <= wait < expected + BASE, waits
        # per user: another name from the same address is not held up
        assert (await _login(c, "admin", PASSWORDS["admin"])).status_code == 302
        # a success resets the name: two free failures again
        await _wait_out(hub, "user", "alice")
        async with _client(hub, "10.0.0.1") as again:  # (c is logged in as admin now)
            assert (await _login(again, "alice", PASSWORDS["alice"])).status_code == 302
        assert await _row(hub, "user", "alice") is None
        assert (await _login(other, "alice", "wrong-password")).status_code == 403
        assert (await _login(other, "alice", "wrong-password")).status_code == 403
        assert _throttled(await _login(other, "alice", "wrong-password"))


async def test_per_client_spraying_many_names(hub: Hub) -> None:
    """One address trying one password on many names (each under the per-name allowance) is held up after
    its own allowance; another address is not."""
    async with _client(hub, "10.0.0.66") as sprayer, _client(hub, "10.0.0.7") as bystander:
        for i in range(6):
            assert (await _login(sprayer, f"user{i}", "Summer2026!")).status_code == 403
        assert _throttled(await _login(sprayer, "user99", "Summer2026!"))
        assert _throttled(await _login(sprayer, "alice", PASSWORDS["alice"]))  # its own account too, meanwhile
        assert (await _login(bystander, "user99", "Summer2026!")).status_code == 403
        assert (await _login(bystander, "alice", PASSWORDS["alice"])).status_code == 302
        row = await _row(hub, "client", "10.0.0.66")
        assert row is not None and row[0] == 6


async def test_throttle_holds_across_auth_replicas(hub: Hub) -> None:
    """Failures on one auth replica make the other wait: the count is in PostgreSQL, not in a process."""
    other = create_auth(hub.settings)
    async with other.router.lifespan_context(other) as state:
        replica_b = _with_state(other, state)
        async with _client(hub, "10.0.0.3") as a, _client(hub, "10.0.0.4", replica_b) as b:
            assert (await _login(a, "alice", "wrong-password")).status_code == 403
            assert (await _login(b, "alice", "wrong-password")).status_code == 403
            assert _throttled(await _login(a, "alice", PASSWORDS["alice"]))
            assert _throttled(await _login(b, "alice", PASSWORDS["alice"]))
            # a burst in parallel on both replicas: every attempt is counted before its password is checked
            await _wait_out(hub, "user", "alice")
            burst = await asyncio.gather(*(_login(x, "alice", "wrong-password") for x in (a, b) * 4))
            assert sum(r.status_code == 403 for r in burst) == 1 and sum(_throttled(r) for r in burst) == 7


async def test_token_auth_body_is_throttled(hub: Hub) -> None:
    """The token API's `auth` credentials count with the login form's: 429, JSON and Retry-After."""
    body = {"auth": {"username": "alice", "password": "wrong-password"}}
    async with _client(hub, "10.0.0.5") as c:
        for _ in range(2):
            assert (await c.post("/hub/api/users/alice/tokens", json=body)).status_code == 403
        r = await c.post("/hub/api/users/alice/tokens", json={"auth": {"username": "alice",
                                                                       "password": PASSWORDS["alice"]}})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["status"] == 429 and "Too many failed login attempts" in r.json()["message"]
        assert "token" not in r.json()
        assert _throttled(await _login(c, "alice", PASSWORDS["alice"]))  # the same count as the form's
        await _wait_out(hub, "user", "alice")
        r = await c.post("/hub/api/users/alice/tokens", json={"auth": {"username": "alice",
                                                                       "password": PASSWORDS["alice"]}})
        assert r.status_code == 201 and r.json()["token"]
    assert await _row(hub, "user", "alice") is None  # reset by the success


async def test_throttle_can_be_turned_off(tmp_path: Path, nats_url: str, database_url: str,
                                          nats_namespace: str) -> None:
    settings: ServiceSettings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                                             auth={**THROTTLE, "login_throttle": False})
    async with running_hub(settings) as hub, _client(hub, "10.0.0.8") as c:
        for _ in range(5):
            assert (await _login(c, "alice", "wrong-password")).status_code == 403
        assert (await _login(c, "alice", PASSWORDS["alice"])).status_code == 302


async def test_concurrent_failures_of_one_address_within_its_allowance_are_never_throttled(hub: Hub) -> None:
    """Failed logins of different names from one address at once (a campus behind one NAT), fewer than the
    address's free attempts: each is refused as a wrong password, none waits. A failure that owes no wait
    used to move the row's `blocked_until` to its own later clock reading, which an attempt that had read
    the clock before waiting for the row's lock took for a wait of a few milliseconds (429)."""
    names = [f"user{i}" for i in range(THROTTLE["throttle_client_free_attempts"] - 1)]
    for _ in range(3):
        async with hub.sessions() as s, s.begin():
            await s.execute(LoginThrottle.__table__.delete())
        clients = [_client(hub, "10.9.8.7") for _ in names]
        try:
            answers = await asyncio.gather(*(_login(c, n, "wrong") for c, n in zip(clients, names, strict=True)))
        finally:
            for c in clients:
                await c.aclose()
        assert [r.status_code for r in answers] == [403] * len(names), [r.text[-300:] for r in answers]
