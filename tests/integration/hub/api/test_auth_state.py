"""Users' auth_state encrypted at rest with `auth.crypt_key`: what PostgreSQL holds, key rotation, a key
no longer configured, and the behaviour without a key."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from fleethub.shared.crypt import SEALED
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

STATE = {"access_token": "plain-oauth-token-4f1d", "refresh": ["plain-refresh-9c2e"]}


async def _stored(hub: Hub, user: str) -> Any:
    """The auth_state column as PostgreSQL holds it."""
    async with hub.sessions() as s:
        raw = (await s.execute(text("SELECT auth_state::text FROM users WHERE name = :n"), {"n": user})).scalar_one()
    return json.loads(raw) if raw is not None else None


def _opens_with(key: bytes, stored: Any) -> Any:
    return json.loads(Fernet(base64.urlsafe_b64encode(key)).decrypt(stored[SEALED].encode()))


async def _reads(hub: Hub, user: str) -> list[Any]:
    """auth_state as an admin reads it: GET /users/{name} by the fast read, the same by the route (a query
    the fast read leaves to it), and GET /users."""
    admin = await hub.headers_for("admin", admin=True)
    one = await hub.client.get(f"/hub/api/users/{user}", headers=admin)
    routed = await hub.client.get(f"/hub/api/users/{user}?include_stopped_servers=1&by=route", headers=admin)
    listed = await hub.client.get("/hub/api/users", headers=admin)
    assert one.status_code == routed.status_code == listed.status_code == 200, (one.text, routed.text, listed.text)
    (entry,) = [u for u in listed.json() if u["name"] == user]
    return [one.json()["auth_state"], routed.json()["auth_state"], entry["auth_state"]]


async def _patch(hub: Hub, user: str, state: dict[str, Any]) -> dict[str, Any]:
    admin = await hub.headers_for("admin", admin=True)
    r = await hub.client.patch(f"/hub/api/users/{user}", json={"auth_state": state}, headers=admin)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_auth_state_is_sealed_at_rest_and_keys_rotate(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    old, new, stranger = (secrets.token_bytes(32) for _ in range(3))

    def settings(*keys: bytes) -> Any:
        return hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"crypt_key": [base64.urlsafe_b64encode(k).decode() for k in keys]})

    async with running_hub(settings(old)) as hub:
        await hub.token_for("alice")
        assert (await _patch(hub, "alice", STATE))["auth_state"] == STATE
        stored = await _stored(hub, "alice")
        assert list(stored) == [SEALED] and "plain-" not in json.dumps(stored)  # no plaintext in PostgreSQL
        assert _opens_with(old, stored) == STATE
        assert await _reads(hub, "alice") == [STATE] * 3
        written_with_old = stored

    # a new key added first: the old row still reads, and the start rewrote it under the new key
    async with running_hub(settings(new, old)) as hub:
        assert await _reads(hub, "alice") == [STATE] * 3
        stored = await _stored(hub, "alice")
        assert stored != written_with_old and _opens_with(new, stored) == STATE
        await _patch(hub, "alice", {**STATE, "v": 2})
        assert _opens_with(new, await _stored(hub, "alice")) == {**STATE, "v": 2}

    # only a key that never wrote it: null with a warning, never a 500, and the row is left as it was
    caplog.set_level(logging.WARNING)
    async with running_hub(settings(stranger)) as hub:
        before = await _stored(hub, "alice")
        assert await _reads(hub, "alice") == [None] * 3
        assert any("not in auth.crypt_key" in r.getMessage() and "alice" in r.getMessage() for r in caplog.records)
        assert await _stored(hub, "alice") == before
        logged = " ".join(r.getMessage() for r in caplog.records)
        for k in (old, new, stranger):
            assert k.hex() not in logged and base64.urlsafe_b64encode(k).decode() not in logged


async def test_without_a_key_auth_state_is_plain_and_a_key_later_seals_it(
        tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with running_hub(hub_settings(tmp_path, nats_url, database_url, nats_namespace)) as hub:
        assert any("auth.crypt_key" in r.getMessage() and "unencrypted" in r.getMessage() for r in caplog.records)
        await hub.token_for("bob")
        assert (await _patch(hub, "bob", STATE))["auth_state"] == STATE  # existing clients keep working
        assert await _stored(hub, "bob") == STATE
        assert await _reads(hub, "bob") == [STATE] * 3
        # a state shaped like the encrypted form would read back as undecryptable: refused, nothing lost
        r = await hub.client.patch("/hub/api/users/bob", json={"auth_state": {SEALED: "forged"}},
                                   headers=await hub.headers_for("admin", admin=True))
        assert r.status_code == 400 and SEALED in r.json()["message"]
        assert await _stored(hub, "bob") == STATE

    key = secrets.token_bytes(32)
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"crypt_key": [key.hex()]})
    async with running_hub(settings) as hub:  # the start encrypts what was stored in plaintext
        stored = await _stored(hub, "bob")
        assert "plain-" not in json.dumps(stored) and _opens_with(key, stored) == STATE
        assert await _reads(hub, "bob") == [STATE] * 3

    # the key removed again: the sealed row reads as null (logged), not as its ciphertext
    async with running_hub(hub_settings(tmp_path, nats_url, database_url, nats_namespace)) as hub:
        assert await _reads(hub, "bob") == [None] * 3
