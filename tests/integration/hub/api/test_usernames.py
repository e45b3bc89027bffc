"""User names: normalized (NFKC, lower-cased) where they come in, refused with a clear 400 when they hold
dot-segments, slashes, whitespace or invisible characters; rows stored before keep working."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from fleethub.shared.db.models import Account, User
from fleethub.shared.security import hash_password
from tests.support.hub import XSRF_FIELD, Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

ZWJ = "\u200d"
REFUSED = [".", "..", "%2e%2e", "%2E.", "%252e%252e", "a%2Fb", "a\\b", f"ev{ZWJ}e", "e\u200bve", "\u202eeve",
           " eve", "eve ", "a\u2028b", "", "x" * 256]


async def _names(hub: Hub) -> set[str]:
    async with hub.sessions() as s:
        return set((await s.execute(select(User.name))).scalars())


async def test_api_refuses_bad_names(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    before = await _names(hub)
    for bad in REFUSED:
        r = await c.post("/hub/api/users", json={"usernames": [bad]}, headers=admin)
        assert r.status_code == 400 and "invalid username" in r.json()["message"], (bad, r.text)
        r = await c.patch("/hub/api/users/alice", json={"name": bad}, headers=admin)
        assert r.status_code == 400 and "invalid username" in r.json()["message"], (bad, r.text)
    for bad in ("%2e%2e", "a%2Fb", f"ev{ZWJ}e", "a\\b"):  # in the path, percent-encoded once more
        r = await c.post(f"/hub/api/users/{quote(bad, safe='')}", headers=admin)
        assert r.status_code == 400 and "invalid username" in r.json()["message"], (bad, r.text)
    assert await _names(hub) == before  # nothing created, alice not renamed


async def test_api_normalizes_new_and_renamed_names(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    c = hub.client
    r = await c.post("/hub/api/users", json={"usernames": ["\uff26rank", "Be\u0301a", "\ufb01le"]}, headers=admin)
    assert r.status_code == 201 and [u["name"] for u in r.json()] == ["frank", "b\u00e9a", "file"]
    r = await c.post("/hub/api/users", json={"usernames": ["FRANK", "be\u0301a"]}, headers=admin)
    assert r.status_code == 409  # the same identities
    r = await c.patch("/hub/api/users/frank", json={"name": "Fr\u00c4nk"}, headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "fr\u00e4nk"
    r = await c.patch("/hub/api/users/file", json={"name": "B\u00c9A"}, headers=admin)
    assert r.status_code == 400 and "already exists" in r.json()["message"]
    # look-ups are exact, as JupyterHub's: the stored (normalized) name
    renamed = quote("fr\u00e4nk")
    assert (await c.get(f"/hub/api/users/{renamed}", headers=admin)).status_code == 200


async def test_rows_stored_before_normalization_keep_working(hub: Hub) -> None:
    """A name an earlier release stored un-normalized (here NFD) is still found by the API and still logs in
    when typed the same way; an admin may rename it to its normalized form."""
    legacy = "leg\u0065\u0301"  # e + combining acute (NFD)
    async with hub.sessions() as s, s.begin():
        uid = (await s.execute(insert(User).values(name=legacy).returning(User.id))).scalar_one()
        await s.execute(insert(Account).values(user_id=uid, password_hash=hash_password("legacy-password")))
    admin = await hub.headers_for("admin", admin=True)
    r = await hub.client.get(f"/hub/api/users/{quote(legacy)}", headers=admin)
    assert r.status_code == 200 and r.json()["name"] == legacy
    async with hub.new_client() as c:
        assert (await hub.login(c, legacy, "legacy-password")).status_code == 302
        me = await c.get("/hub/api/user", headers={"X-XSRFToken": hub.xsrf(c)})
        assert me.json()["name"] == legacy
    r = await hub.client.patch(f"/hub/api/users/{quote(legacy)}", json={"name": legacy}, headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "leg\u00e9"  # normalized on rename
    async with hub.new_client() as c:
        assert (await hub.login(c, "leg\u00e9", "legacy-password")).status_code == 302


async def test_login_form_refuses_bad_names(hub: Hub) -> None:
    for bad in REFUSED[:-2]:  # (the form refuses an empty name itself)
        async with hub.new_client() as c:
            r = await hub.login(c, bad, "whatever-password")
            assert r.status_code == 400 and "invalid username" in r.text, bad
    async with hub.new_client() as c:  # a normalized form of a real name logs in as it
        assert (await hub.login(c, "\uff21LICE", "alice-password")).status_code == 302


async def test_signup_refuses_and_normalizes(tmp_path: Path, nats_url: str, database_url: str,
                                             nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, auth={"open_signup": True})
    async with running_hub(settings) as hub:
        before = await _names(hub)
        for bad in [*REFUSED, f"alice{ZWJ}"]:
            async with hub.new_client() as c:
                page = await c.get("/hub/signup")
                m = XSRF_FIELD.search(page.text)
                assert m
                form = {"username": bad, "password": "long-password", "_xsrf": m.group(1)}
                r = await c.post("/hub/signup", data=form)
                assert r.status_code == 400 and "invalid username" in r.text, bad
        assert await _names(hub) == before
        async with hub.new_client() as c:
            page = await c.get("/hub/signup")
            m = XSRF_FIELD.search(page.text)
            assert m
            r = await c.post("/hub/signup", data={"username": "\uff25ve", "password": "eve-password",
                                                   "_xsrf": m.group(1)})
            assert r.status_code == 201
            r = await c.post("/hub/signup", data={"username": "ALICE", "password": "eve-password",
                                                   "_xsrf": m.group(1)})
        assert await _names(hub) == before | {"eve"}
        async with hub.new_client() as c:
            assert (await hub.login(c, "EVE", "eve-password")).status_code == 302
