"""Absolute URLs the hub builds (pagination's `next.url`) come from its public URL, never from the request's Host,
and on an https hub every cookie the hub sets or removes is `Secure`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fleethub.shared.events import Route
from fleethub.shared.names import route_key
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration
PAGED = {"Accept": "application/jupyterhub-pagination+json"}


async def test_next_url_ignores_a_hostile_host(hub: Hub) -> None:
    admin = {**await hub.headers_for("admin", admin=True), **PAGED}
    for name in ("p1", "p2", "p3"):
        await hub.headers_for(name)
    for user in ("p1", "p2"):
        route = Route(routespec=f"/user/{user}/", target="http://127.0.0.1:1", data={"user": user, "server_name": ""})
        await hub.bus.routes.put(route_key(user, ""), route)
    public = hub.settings.hub_public_url
    for host in ("evil.example", "evil.example:8000", "127.0.0.1:8000@evil.example"):
        r = await hub.client.get("/hub/api/users?limit=1", headers={**admin, "Host": host})
        nxt = r.json()["_pagination"]["next"]
        assert nxt["url"] == f"{public}/hub/api/users?offset=1&limit=1", host
        # the proxy table pages the same way
        r = await hub.client.get("/hub/api/proxy?limit=1", headers={**admin, "Host": host})
        assert r.json()["_pagination"]["next"]["url"] == f"{public}/hub/api/proxy?offset=1&limit=1"


async def test_next_url_takes_the_public_origin(tmp_path: Path, nats_url: str, database_url: str,
                                               nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, public_url="https://hub.example.org/")
    async with running_hub(settings) as hub:
        admin = {**await hub.headers_for("admin", admin=True), **PAGED}
        await hub.headers_for("p1")
        r = await hub.client.get("/hub/api/users?limit=1&name_filter=", headers={**admin, "Host": "evil.example",
                                                                                 "X-Forwarded-Proto": "http"})
        assert r.json()["_pagination"]["next"]["url"] == \
            "https://hub.example.org/hub/api/users?name_filter=&offset=1&limit=1"


async def test_logout_removes_cookies_as_secure_ones_on_https(tmp_path: Path, nats_url: str, database_url: str,
                                                              nats_namespace: str) -> None:
    settings = hub_settings(tmp_path, nats_url, database_url, nats_namespace, public_url="https://hub.example.org")
    async with running_hub(settings) as hub, httpx.AsyncClient(transport=hub.transport,
                                                                base_url="https://hub.example.org") as browser:
        assert (await hub.login(browser, "alice")).status_code == 302
        r = await browser.get("/hub/logout")
        removed = {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}
        assert set(removed) == {"jupyterhub-hub-login", "jupyterhub-session-id", "_xsrf"}
        assert all("secure" in c and "max-age=0" in c for c in removed.values()), removed
