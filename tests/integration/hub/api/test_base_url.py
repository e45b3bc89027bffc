"""The auth and api apps under `base_url = "/jhub/"` (in-process, real NATS and PostgreSQL): pages, cookies,
redirects, `next`, the REST API's URLs and the OAuth provider's redirect URIs all carry the prefix, and
nothing outside it is served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleethub.shared.settings import ServiceSettings
from tests.support.hub import PASSWORDS, XSRF_FIELD, Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

HUB = "/jhub/hub"


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, base_url="/jhub")


@pytest.fixture
async def hub(settings: ServiceSettings) -> AsyncIterator[Hub]:
    async with running_hub(settings) as h:
        yield h


async def _log_in(client: httpx.AsyncClient, user: str, next_url: str | None = None) -> httpx.Response:
    query = {"next": next_url} if next_url is not None else {}
    page = await client.get(f"{HUB}/login", params=query)
    assert page.status_code == 200, page.text
    m = XSRF_FIELD.search(page.text)
    assert m, page.text
    return await client.post(f"{HUB}/login", params=query,
                             data={"username": user, "password": PASSWORDS[user], "_xsrf": m.group(1)})


def _cookie_paths(response: httpx.Response) -> dict[str, str]:
    out = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        attrs = {k.strip().lower(): v for k, _, v in (a.partition("=") for a in header.split(";")[1:])}
        out[name] = attrs["path"]
    return out


async def test_setting_is_normalized_and_bad_values_are_refused(settings: ServiceSettings) -> None:
    from fleethub.shared.errors import ConfigError
    from fleethub.shared.settings import load_settings

    assert settings.base_url == "/jhub/"
    for bad, why in (("jhub/", "starting with '/'"), ("/a/../b/", "no '.' or '..'"), ("/jhub/?x=1", "no query"),
                     ("/hub/", "a path of the hub itself"), ("//evil.example/", "plain path")):
        with pytest.raises(ConfigError) as exc:
            load_settings(None, base_url=bad)
        assert "base_url (FLEETHUB_BASE_URL)" in str(exc.value) and why in str(exc.value), str(exc.value)


async def test_login_page_cookies_and_redirects_under_the_prefix(hub: Hub) -> None:
    async with hub.new_client() as browser:
        r = await browser.get(f"{HUB}/home")
        assert r.status_code == 302
        assert r.headers["location"] == f"{HUB}/login?next=/jhub/hub/home"
        page = await browser.get(f"{HUB}/login")
        assert 'action="/jhub/hub/login' in page.text and "/jhub/hub/static/fleethub.css" in page.text
        assert 'href="/hub/' not in page.text and 'action="/hub/' not in page.text
        assert set(_cookie_paths(page).values()) == {"/jhub/hub/"}, _cookie_paths(page)  # the pre-session id

        r = await _log_in(browser, "alice")
        assert r.status_code == 302 and r.headers["location"] == f"{HUB}/home", r.headers
        paths = _cookie_paths(r)
        assert paths["jupyterhub-hub-login"] == "/jhub/hub/", paths
        assert all(p.startswith("/jhub/") for p in paths.values()), paths

        home = await browser.get(f"{HUB}/home")
        assert home.status_code == 200
        assert 'href="/jhub/hub/token"' in home.text and 'href="/jhub/hub/logout"' in home.text
        assert 'data-api="/jhub/hub/api/users/alice"' in home.text
        assert 'href="/hub/' not in home.text and 'action="/hub/' not in home.text
        out = await browser.get(f"{HUB}/logout")
        assert out.headers["location"] == f"{HUB}/login"


@pytest.mark.parametrize(("next_url", "expected"), [
    ("/jhub/user/alice/lab?x=1", "/jhub/user/alice/lab?x=1"),  # inside the prefix: kept
    ("/user/alice/lab", f"{HUB}/home"),  # outside the prefix: refused, the default instead
    ("/hub/admin", f"{HUB}/home"),
    ("http://127.0.0.1:8000/elsewhere/", f"{HUB}/home"),  # our host, outside the prefix
    ("//evil.example/jhub/x", f"{HUB}/home"),
    ("/jhub/user/alice/%2e%2e/bob/", f"{HUB}/home"),  # a dot segment leaves the user's prefix
])
async def test_next_must_stay_under_the_prefix(hub: Hub, next_url: str, expected: str) -> None:
    async with hub.new_client() as browser:
        r = await _log_in(browser, "alice", next_url)
        assert r.status_code == 302, r.text
        assert r.headers["location"] == expected


async def test_paths_outside_the_prefix_are_not_served(hub: Hub) -> None:
    headers = await hub.headers_for("alice")
    for path in ("/hub/login", "/hub/api/", "/hub/home", "/hub/api/users/alice", "/jhubx/hub/login"):
        r = await hub.client.get(path, headers=headers)
        assert r.status_code == 404, (path, r.status_code)
        assert "/jhub/" in r.json()["message"]
    assert (await hub.client.get(f"{HUB}/api/")).status_code == 200


async def test_api_urls_and_the_servers_oauth_redirect_uri(hub: Hub) -> None:
    headers = await hub.headers_for("alice")
    r = await hub.client.post(f"{HUB}/api/users/alice/server", headers=headers)
    assert r.status_code in (201, 202), r.text
    await hub.spawn_command()
    for path in (f"{HUB}/api/users/alice", f"{HUB}/api/user"):  # the fast read answers the first
        model = (await hub.client.get(path, headers=headers)).json()
        server = model["servers"][""]
        assert server["url"] == "/jhub/user/alice/", model
        assert server["progress_url"] == f"{HUB}/api/users/alice/server/progress", model

    async with hub.new_client() as browser:
        await _log_in(browser, "alice")
        query = {"client_id": "jupyterhub-user-alice", "response_type": "code", "state": "s1"}
        wrong = await browser.get(f"{HUB}/api/oauth2/authorize",
                                  params={**query, "redirect_uri": "/user/alice/oauth_callback"})
        assert wrong.status_code == 400  # the unprefixed callback is not the one registered
        r = await browser.get(f"{HUB}/api/oauth2/authorize",
                              params={**query, "redirect_uri": "/jhub/user/alice/oauth_callback"})
        assert r.status_code == 302, r.text
        location = urlsplit(r.headers["location"])
        assert location.path == "/jhub/user/alice/oauth_callback"
        assert parse_qs(location.query)["state"] == ["s1"]

    async with hub.new_client() as anon:  # not logged in: to the login page, the authorize URL as its next
        r = await anon.get(f"{HUB}/api/oauth2/authorize",
                           params={**query, "redirect_uri": "/jhub/user/alice/oauth_callback"})
        location = urlsplit(r.headers["location"])
        assert location.path == f"{HUB}/login"
        assert parse_qs(location.query)["next"][0].startswith(f"{HUB}/api/oauth2/authorize?")


async def test_share_codes_and_pagination_links_under_the_prefix(hub: Hub) -> None:
    admin = await hub.headers_for("admin", admin=True)
    await hub.token_for("alice")
    r = await hub.client.post(f"{HUB}/api/share-codes/alice/", json={}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["accept_url"].startswith(f"{HUB}/accept-share?code=")
    assert r.json()["server"]["url"] == "/jhub/user/alice/"

    await hub.headers_for("bob")  # a second user: two pages of one
    r = await hub.client.get(f"{HUB}/api/users", params={"limit": 1},
                             headers={**admin, "Accept": "application/jupyterhub-pagination+json"})
    nxt = r.json()["_pagination"]["next"]
    assert urlsplit(nxt["url"]).path == f"{HUB}/api/users", nxt  # followed verbatim by jupyterhub-idle-culler
    assert (await hub.client.get(urlsplit(nxt["url"]).path + "?" + urlsplit(nxt["url"]).query,
                                 headers=admin)).status_code == 200


@pytest.mark.parametrize(("next_url", "expected"), [("/jhub/user/admin/lab", "/jhub/user/admin/lab"),
                                                    ("/user/admin/lab", "/jhub/user/admin/")])
async def test_accept_share_form_next_stays_under_the_prefix(hub: Hub, next_url: str, expected: str) -> None:
    admin = await hub.headers_for("admin", admin=True)
    code = (await hub.client.post(f"{HUB}/api/share-codes/admin/", json={}, headers=admin)).json()["code"]
    async with hub.new_client() as browser:
        await _log_in(browser, "alice")
        page = await browser.get(f"{HUB}/accept-share", params={"code": code})
        assert page.status_code == 200 and 'action="/jhub/hub/accept-share"' in page.text, page.text
        m = XSRF_FIELD.search(page.text)
        assert m
        r = await browser.post(f"{HUB}/accept-share", data={"_xsrf": m.group(1), "code": code, "next": next_url})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == expected  # outside the prefix: the shared server, its default


async def test_not_running_page_under_the_prefix(hub: Hub) -> None:
    async with hub.new_client() as browser:
        await _log_in(browser, "alice")
        page = await browser.get(f"{HUB}/user/alice/lab", headers={"Accept": "text/html"})
        assert page.status_code == 424, page.text
        # "Start it" keeps where the browser was going, under the prefix (the page's `next`)
        assert 'action="/jhub/hub/spawn/alice?next=/jhub/user/alice/lab"' in page.text
        assert "<code>/jhub/user/alice/lab</code>" in page.text


async def test_scripts_take_their_urls_from_the_page(hub: Hub) -> None:
    async with hub.new_client() as browser:
        await _log_in(browser, "admin")
        admin = await browser.get(f"{HUB}/admin")
        assert admin.status_code == 200
        assert 'data-base-url="/jhub/"' in admin.text and 'src="/jhub/hub/static/admin.js?v=' in admin.text
        token = await browser.get(f"{HUB}/token")
        assert 'data-api="/jhub/hub/api/"' in token.text and 'src="/jhub/hub/static/token.js?v=' in token.text
        script = await browser.get(f"{HUB}/static/admin.js")
        assert script.status_code == 200 and '"/hub/' not in script.text and "`/hub/" not in script.text


# the router's trailing-slash redirects stay under the prefix and name no host (they used to answer
# `http://<Host header>/hub/...`: outside the prefix, a 404, on whatever host the request claimed)
async def test_trailing_slash_redirects_stay_under_the_prefix(hub: Hub) -> None:
    headers = await hub.headers_for("admin", admin=True)
    r = await hub.client.get("/jhub/hub/api/users/", headers=headers)
    assert r.status_code == 307, r.text
    assert r.headers["location"] == "/jhub/hub/api/users", r.headers
    followed = await hub.client.get(r.headers["location"], headers=headers)
    assert followed.status_code == 200 and any(u["name"] == "admin" for u in followed.json()), followed.text

    r = await hub.client.get("/jhub/hub/metrics/?x=1", headers={**headers, "Host": "evil.example"})
    assert r.status_code == 307, r.text
    assert r.headers["location"] == "/jhub/hub/metrics?x=1", r.headers


# `jupyterhub_request_duration_seconds` under base_url: the handler is the matched route's template although
# `BasePrefix` hands the app a copy of the request's scope, and invented methods share one label value
COUNT = "jupyterhub_request_duration_seconds_count"

def _request_counts(text: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == COUNT:
                labels = sample.labels
                out[(labels["method"], labels["handler"], labels["code"])] = sample.value
    return out


async def test_handler_is_the_route_template_under_base_url(hub: Hub) -> None:
    headers = await hub.headers_for("admin", admin=True)
    for _ in range(2):  # not one user's read: the fast read answers that in front of the router
        r = await hub.client.get(f"{HUB}/api/groups", headers=headers)
        assert r.status_code == 200, r.text
    r = await hub.client.get(f"{HUB}/api/nothing-here", headers=headers)
    assert r.status_code == 404
    r = await hub.client.get(f"{HUB}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    counts = _request_counts(r.text)
    assert counts.get(("GET", "/hub/api/groups", "200")) == 2, counts
    assert counts.get(("GET", "unmatched", "404")) == 1, counts
    assert not any(h.startswith("/jhub") for _, h, _ in counts), counts  # templates, never the public path


async def test_invented_methods_share_one_label(hub: Hub) -> None:
    headers = await hub.headers_for("admin", admin=True)
    for method in ("BREW", "PROPFIND", "X-ANY-1", "X-ANY-2"):
        r = await hub.client.request(method, f"{HUB}/api/users", headers=headers)
        assert r.status_code in (400, 405), (method, r.status_code, r.text)
        r = await hub.client.request(method, f"{HUB}/nowhere-{method}", headers=headers)
        assert r.status_code in (400, 404, 405), (method, r.status_code, r.text)
    r = await hub.client.get(f"{HUB}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    counts = _request_counts(r.text)
    methods = {m for m, _, _ in counts}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, methods
    assert sum(v for (m, h, _), v in counts.items() if m == "other" and h == "/hub/api/users") == 4, counts
