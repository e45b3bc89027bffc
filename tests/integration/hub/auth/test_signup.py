"""`/hub/signup`: off by default; with open_signup, new password accounts and never a takeover."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from fleethub.shared.db.models import Account, User
from tests.support.hub import XSRF_FIELD, Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration


async def _signup(hub: Hub, username: str, password: str) -> int:
    async with hub.new_client() as c:
        page = await c.get("/hub/signup")
        m = XSRF_FIELD.search(page.text)
        assert m, page.text
        r = await c.post("/hub/signup", data={"username": username, "password": password, "_xsrf": m.group(1)})
        return r.status_code


async def test_signup_is_off_by_default(hub: Hub) -> None:
    assert (await hub.client.get("/hub/signup")).status_code == 404
    r = await hub.client.post("/hub/signup", data={"username": "eve", "password": "eve-password"})
    assert r.status_code == 404
    assert "Create an account" not in (await hub.client.get("/hub/login")).text


async def test_open_signup(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            auth={"open_signup": True, "admin_users": ["admin", "boss"]})
    async with running_hub(settings) as hub:
        assert "/hub/signup" in (await hub.client.get("/hub/login")).text
        assert await _signup(hub, "Eve", "eve-password") == 201
        assert (await hub.login(hub.client, "eve", "eve-password")).status_code == 302
        # existing users (with or without an account), admins-to-be and blocked users can not be claimed
        await hub.token_for("created-by-api")
        for name in ("eve", "alice", "created-by-api", "boss", "mallory"):
            assert await _signup(hub, name, "attacker-password") in (403, 409), name
        assert await _signup(hub, "bad name", "whatever-password") == 400
        assert await _signup(hub, "shorty", "short") == 400
        async with hub.new_client() as c:  # the form's XSRF token is required
            r = await c.post("/hub/signup", data={"username": "zed", "password": "zed-password"})
            assert r.status_code == 403
        async with hub.sessions() as s:
            names = set((await s.execute(select(User.name).join(Account, Account.user_id == User.id))).scalars())
        assert names == {"admin", "alice", "mallory", "eve"}
        async with hub.new_client() as c:
            assert (await hub.login(c, "alice", "attacker-password")).status_code == 403
