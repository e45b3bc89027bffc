"""The admin panel page (`/hub/admin`): who may see it, what it hands its script, escaping; its static files."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleethub.shared.accounts import set_password
from fleethub.shared.templating import STATIC_DIR
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

ADMIN_ROOT = re.compile(r'<div class="admin" id="admin"([^>]*)>')
SCRIPT = re.compile(r'<script src="(/hub/static/admin\.js\?v=[0-9a-f]+)" defer></script>')


def _data(page: str) -> dict[str, str]:
    """The `data-*` attributes of the panel's root element, unescaped as a browser reads them."""
    root = ADMIN_ROOT.search(page)
    assert root, page[:2000]
    return {m.group(1): html.unescape(m.group(2) or m.group(3))
            for m in re.finditer(r'data-([a-z-]+)=(?:"([^"]*)"|\'([^\']*)\')', root.group(1))}


async def test_only_holders_of_admin_ui_see_the_panel(hub: Hub) -> None:
    anonymous = await hub.client.get("/hub/admin")
    assert anonymous.status_code == 302 and anonymous.headers["location"] == "/hub/login?next=%2Fhub%2Fadmin"
    await hub.login(hub.client, "alice")
    refused = await hub.client.get("/hub/admin", headers={"Accept": "text/html"})
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert "admin-ui" in refused.text and 'id="admin"' not in refused.text
    # an admin's token without admin-ui does not open it either (a token holds only its own scopes)
    token = await hub.headers_for("admin", admin=True, scopes=["read:users"])
    assert (await hub.client.get("/hub/admin", headers=token)).status_code == 403
    # nor does alice's navigation bar offer it
    assert 'href="/hub/admin"' not in (await hub.client.get("/hub/home")).text


async def test_the_page_for_an_admin(hub: Hub) -> None:
    async with hub.new_client() as browser:
        await hub.login(browser, "admin")
        page = await browser.get("/hub/admin")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert "script-src" not in page.headers["content-security-policy"]  # 'self' only: no inline scripts
        assert "<script>" not in page.text
        data = _data(page.text)
        assert data["me"] == "admin" and json.loads(data["access"]) == ["access:servers"]
        assert data["signups"] == "true" and data["named-servers"] == "false" and data["spawn-form"] == "false"
        assert 'id="signups"' in page.text and 'href="/hub/admin"' in page.text  # the nav's Admin link
        for section in ("users", "add-users", "groups"):
            assert f'id="{section}"' in page.text
        # the page's script, served by the hub with a content version (cached for long)
        script = SCRIPT.search(page.text)
        assert script, page.text[-800:]
        js = await browser.get(script.group(1))
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "immutable" in js.headers["cache-control"]
        assert js.content == (STATIC_DIR / "admin.js").read_bytes()
        # it drives the API with the cookie and the `_xsrf` cookie's token, as any page script does
        xsrf = hub.xsrf(browser)
        made = await browser.post("/hub/api/users", json={"usernames": ["zed"]}, headers={"X-XSRFToken": xsrf})
        assert made.status_code == 201 and made.json()[0]["name"] == "zed"
        assert (await browser.post("/hub/api/users", json={"usernames": ["zoe"]})).status_code == 403


async def test_static_files_stay_inside_their_folder(hub: Hub) -> None:
    css = await hub.client.get("/hub/static/fleethub.css")
    assert css.status_code == 200 and css.headers["cache-control"] == "no-cache"  # no version: revalidated
    for bad in ("../templating.py", "%2e%2e/shared/templating.py", "..%2fshared%2ftemplating.py", "nope.js",
                "/etc/passwd", "%2fetc%2fpasswd"):
        r = await hub.client.get(f"/hub/static/{bad}")
        assert r.status_code == 404, bad


@pytest.fixture
async def helpdesk_hub(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> AsyncIterator[Hub]:
    """A hub where alice holds admin-ui through a role, with access to admin's servers only; named servers on;
    group memberships managed by the authenticator."""
    roles = [{"name": "helpdesk", "scopes": ["admin-ui", "list:users", "access:servers!user=admin"],
              "users": ["alice"]}]
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, roles=roles,
                            api={"allow_named_servers": True}, auth={"manage_groups": True})
    async with running_hub(settings) as hub:
        yield hub


async def test_a_role_with_admin_ui_opens_it_and_says_which_servers_it_may_open(helpdesk_hub: Hub) -> None:
    hub = helpdesk_hub
    await hub.login(hub.client, "alice")
    page = await hub.client.get("/hub/admin")
    assert page.status_code == 200
    data = _data(page.text)
    assert data["me"] == "alice" and data["named-servers"] == "true"
    assert sorted(json.loads(data["access"])) == ["access:servers!user=admin", "access:servers!user=alice"]
    assert "Group memberships come from the authenticator" in page.text
    # what the panel's membership edits then meet: the API's refusal, whose message the page shows
    xsrf = {"X-XSRFToken": hub.xsrf(hub.client)}
    admin = await hub.headers_for("admin", admin=True)
    assert (await hub.client.post("/hub/api/groups/physics", headers=admin)).status_code == 201
    refused = await hub.client.post("/hub/api/groups/physics/users", json={"users": ["alice"]}, headers=admin)
    assert refused.status_code == 400 and "auth.manage_groups" in refused.json()["message"]
    # alice's role lets her see the panel, not change users: the API says so to her script
    made = await hub.client.post("/hub/api/users", json={"usernames": ["zed"]}, headers=xsrf)
    assert made.status_code == 403 and "admin:users" in made.json()["message"]


async def test_names_are_escaped(hub: Hub) -> None:
    name = "<i>\"'&x"
    await hub.token_for(name, admin=True)  # the user, an admin
    async with hub.sessions() as s, s.begin():
        await set_password(s, name, "odd-password-1")
    async with hub.new_client() as browser:
        r = await hub.login(browser, name, "odd-password-1")
        assert r.status_code == 302, r.text
        page = await browser.get("/hub/admin")
    assert page.status_code == 200
    assert name not in page.text and "<i>" not in page.text
    assert _data(page.text)["me"] == name  # in the attribute, escaped: the script reads the name itself
    assert "&lt;i&gt;&#34;&#39;&amp;x" in page.text  # the navigation bar's "signed in as"
