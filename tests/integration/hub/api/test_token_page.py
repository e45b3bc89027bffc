"""`/hub/token`: the page lists the user's tokens and OAuth authorizations (escaped); its script's calls to the
REST API (cookie + X-XSRFToken) make and revoke tokens, and nothing else can."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fleethub.shared.db.models import ApiToken, Server, User
from fleethub.shared.events import utcnow
from fleethub.shared.security import hash_token, new_token
from fleethub.shared.settings import ServiceSettings
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

SERVICE = {"name": "whoami", "url": "http://127.0.0.1:9", "api_token": "whoami-service-token-0123456789abcdef"}


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, services=[SERVICE])


@pytest.fixture
async def alice(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """alice's browser, logged in, having opened the token page (which sets the XSRF cookie)."""
    async with hub.new_client() as browser:
        await hub.login(browser, "alice")
        assert (await browser.get("/hub/token")).status_code == 200
        yield browser


async def _oauth_token(hub: Hub, user: str, client_id: str, *, spawn_id: str | None = None,
                       used_ago: timedelta | None = None) -> int:
    """An OAuth token of `user` for `client_id`, as auth's token endpoint writes one."""
    async with hub.sessions() as s, s.begin():
        uid = (await s.execute(select(User.id).where(User.name == user))).scalar_one()
        row = ApiToken(user_id=uid, hashed=hash_token(new_token()), kind="oauth", client_id=client_id,
                       note=f"OAuth token for {client_id}", scopes=["identify"], spawn_id=spawn_id,
                       expires_at=utcnow() + timedelta(days=1),
                       last_activity=utcnow() - used_ago if used_ago is not None else None)
        s.add(row)
        await s.flush()
        return row.id


def _rows(page: str, table: str) -> list[str]:
    body = page.split(f'<table id="{table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr data-token-id=.*?</tr>", body, re.S)


async def test_the_page_needs_a_login_and_renders_the_form(hub: Hub) -> None:
    r = await hub.client.get("/hub/token")
    assert r.status_code == 302 and r.headers["location"] == "/hub/login?next=%2Fhub%2Ftoken"
    await hub.login(hub.client, "alice")
    r = await hub.client.get("/hub/token")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert hub.xsrf(hub.client)  # the cookie the script sends back as X-XSRFToken
    page = r.text
    assert '<label for="token-note">' in page and '<label for="token-scopes">' in page
    assert re.findall(r'<option value="(\d+)">', page) == ["0", "3600", "86400", "604800", "2592000"]
    assert 'data-user="alice"' in page and 'aria-label="Signed in as">alice<' in page  # the navigation bar
    script = re.search(r'<script src="(/hub/static/token\.js\?v=[0-9a-f]+)" defer>', page)
    assert script, page
    js = await hub.client.get(script.group(1))
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "X-XSRFToken" in js.text and "immutable" in js.headers["cache-control"]
    assert (await hub.client.get("/hub/static/../templates/token.html")).status_code == 404
    assert '<table id="api-tokens" hidden>' in page and '<table id="oauth-clients" hidden>' in page


async def test_a_token_made_by_the_page_script_is_listed_escaped_and_never_shown_again(
        hub: Hub, alice: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    note = '<script>alert("x")</script> & <b>build</b>'
    headers = {"X-XSRFToken": hub.xsrf(alice)}
    r = await alice.post("/hub/api/users/alice/tokens", headers=headers,
                         json={"note": note, "expires_in": 3600, "scopes": ["read:users!user=alice"]})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["scopes"] == ["read:users!user=alice"]
    assert (await hub.client.get("/hub/api/user", headers={"Authorization": f"token {made['token']}"})).json()[
        "name"] == "alice"
    page = (await alice.get("/hub/token")).text
    (row,) = _rows(page, "api-tokens")
    assert f'data-token-id="{made["id"]}"' in row
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;build&lt;/b&gt;" in row
    assert "<script>alert" not in page and "<b>build" not in page
    assert "<code>read:users!user=alice</code>" in row and "UTC</time>" in row
    assert made["token"] not in page  # shown once, in the script's JSON answer only
    assert made["token"] not in caplog.text


async def test_the_api_refuses_the_page_s_calls_without_the_xsrf_token(hub: Hub, alice: httpx.AsyncClient) -> None:
    # what a forged cross-site request could send: the cookie, but not the header (a page elsewhere cannot
    # read the _xsrf cookie), or a form post
    url = "/hub/api/users/alice/tokens"
    assert (await alice.post(url, json={"note": "forged"})).status_code == 403
    assert (await alice.post(url, json={"note": "forged"}, headers={"X-XSRFToken": "a.b"})).status_code == 403
    r = await alice.post(url, data={"note": "forged", "_xsrf": hub.xsrf(alice)})
    assert r.status_code == 400  # a form post is no JSON: refused before anyone is looked at
    made = (await alice.post(url, json={"note": "kept"}, headers={"X-XSRFToken": hub.xsrf(alice)})).json()
    assert (await alice.delete(f"{url}/{made['id']}")).status_code == 403
    page = (await alice.get("/hub/token")).text
    assert [re.findall(r'class="note"[^>]*>([^<]*)<', r) for r in _rows(page, "api-tokens")] == [["kept"]]
    # the script's DELETE, with the header, revokes
    assert (await alice.delete(f"{url}/{made['id']}", headers={"X-XSRFToken": hub.xsrf(alice)})).status_code == 204
    assert _rows((await alice.get("/hub/token")).text, "api-tokens") == []
    # scopes beyond the user's are refused with the API's message, which the script shows
    r = await alice.post(url, json={"scopes": ["admin:users"]}, headers={"X-XSRFToken": hub.xsrf(alice)})
    assert r.status_code == 400 and "admin:users" in r.json()["message"]


async def test_oauth_authorizations_are_grouped_by_client_and_revoked_whole(hub: Hub, alice: httpx.AsyncClient) -> None:
    spawn_id = "spawn-token-page-1"
    async with hub.sessions() as s, s.begin():
        uid = (await s.execute(select(User.id).where(User.name == "alice"))).scalar_one()
        s.add(Server(user_id=uid, name="", spawn_id=spawn_id))
    older = await _oauth_token(hub, "alice", "service-whoami", used_ago=timedelta(hours=2))
    newer = await _oauth_token(hub, "alice", "service-whoami", used_ago=timedelta(minutes=5))
    await _oauth_token(hub, "alice", "jupyterhub-user-alice", spawn_id=spawn_id, used_ago=timedelta(days=1))
    await _oauth_token(hub, "admin", "service-whoami")  # another user's: not on alice's page
    page = (await alice.get("/hub/token")).text
    rows = _rows(page, "oauth-clients")
    # one row per client, most recently used first; revoking it names its most recent token
    assert len(rows) == 2 and "Service whoami" in rows[0] and "Server alice/" in rows[1]
    assert f'data-revoke="a{newer}"' in rows[0] and "<td>2</td>" in rows[0]
    assert not any("OAuth token for" in row for row in _rows(page, "api-tokens"))
    assert '<p id="oauth-empty" hidden>' in page
    r = await alice.delete(f"/hub/api/users/alice/tokens/a{newer}", headers={"X-XSRFToken": hub.xsrf(alice)})
    assert r.status_code == 204
    rows = _rows((await alice.get("/hub/token")).text, "oauth-clients")
    assert len(rows) == 1 and "Server alice/" in rows[0]
    async with hub.sessions() as s:
        left = (await s.execute(select(ApiToken.id).where(ApiToken.client_id == "service-whoami"))).scalars().all()
    assert older not in left and len(left) == 1  # alice's both went; admin's stays


async def test_the_expiry_menu_keeps_to_the_hub_s_limit(tmp_path: Path, nats_url: str, database_url: str,
                                                        nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                            api={"token_expires_in_max_seconds": 86400})
    async with running_hub(settings) as hub:
        await hub.login(hub.client, "alice")
        page = (await hub.client.get("/hub/token")).text
        assert re.findall(r'<option value="(\d+)">([^<]+)<', page) == [("3600", "1 hour"), ("86400", "1 day")]
        r = await hub.client.post("/hub/api/users/alice/tokens", json={"note": "forever"},
                                  headers={"X-XSRFToken": hub.xsrf(hub.client)})
        assert r.status_code == 400 and "86400" in r.json()["message"]
