"""The auth pages from a deployment's templates: a login.html extending the built-in one, template_vars and
a page's announcement, the logo in the navigation bar, the navigation of a logged-in user (escaped), and a
template that fails: a 500 page and a log line naming it; a missing template directory stops the start."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from fleethub.services.api.app import create_app as create_api
from fleethub.services.auth.app import create_app as create_auth
from fleethub.shared.accounts import set_password
from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings
from fleethub.shared.templating import TEMPLATE_FAILED
from tests.support.hub import Hub, hub_settings, running_hub

pytestmark = pytest.mark.integration

LOGIN = """{% extends "templates/login.html" %}
{% block login_message %}<p id="welcome">Welcome to {{ org }}</p>{% endblock %}
"""
LOGO = b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect width="40" height="20"/></svg>'


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "login.html").write_text(LOGIN)
    (tmp_path / "logo.svg").write_bytes(LOGO)
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace,
                        pages={"template_paths": [tmp_path / "templates"], "logo_file": tmp_path / "logo.svg",
                               "template_vars": {"org": "ACME <Labs>", "announcement_login": "Down <b>tonight</b>"}},
                        services=[{"name": "whoami", "url": "http://127.0.0.1:9"},
                                  {"name": "hidden", "url": "http://127.0.0.1:9", "display": False}])


async def test_login_page_from_the_deployments_template(hub: Hub) -> None:
    r = await hub.client.get("/hub/login")
    assert r.status_code == 200
    assert '<p id="welcome">Welcome to ACME &lt;Labs&gt;</p>' in r.text  # the block override, vars escaped
    assert 'class="announcement" role="note">Down &lt;b&gt;tonight&lt;/b&gt;</p>' in r.text  # announcement_login
    assert 'id="username"' in r.text and 'name="_xsrf"' in r.text  # the built-in form, kept
    assert "Sign out" not in r.text  # a visitor: no navigation
    logo = re.search(r'<img src="(/hub/logo\?v=[0-9a-f]+)"', r.text)
    assert logo, r.text
    served = await hub.client.get(logo.group(1))
    assert served.status_code == 200 and served.content == LOGO
    assert served.headers["content-type"] == "image/svg+xml" and "immutable" in served.headers["cache-control"]
    # the form still logs in, and the announcement is the login page's only
    assert (await hub.login(hub.client, "alice")).status_code == 302
    page = await hub.client.get("/hub/change-password")
    assert "Down" not in page.text and "/hub/logo?v=" in page.text


async def test_a_logged_in_users_navigation_is_escaped(hub: Hub) -> None:
    async with hub.sessions() as s, s.begin():
        await set_password(s, "<script>", "script-password-1")
    async with hub.new_client() as browser:
        assert (await hub.login(browser, "<script>", "script-password-1")).status_code == 302
        page = await browser.get("/hub/change-password")
        assert page.status_code == 200 and "<script>" not in page.text
        assert 'aria-label="Signed in as">&lt;script&gt;</li>' in page.text
        assert 'href="/hub/logout">Sign out' in page.text and 'href="/hub/change-password"' in page.text
        assert 'href="/hub/admin"' not in page.text and "/services/whoami/" not in page.text
    async with hub.new_client() as admin:
        assert (await hub.login(admin, "admin")).status_code == 302
        page = await admin.get("/hub/change-password")
        assert 'href="/hub/admin"' in page.text  # admin-ui, read from the database by the auth service
        assert 'href="/services/whoami/">whoami' in page.text and "/services/hidden/" not in page.text


async def test_error_messages_render_inert(hub: Hub) -> None:
    # a refused name is echoed in the message; a wrong password's name in the form's field
    r = await hub.login(hub.client, "<script>alert(1)</script>", "whatever1")
    assert r.status_code == 400 and "invalid username &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39;" in r.text
    assert "<script>" not in r.text
    r = await hub.login(hub.client, '"><script>', "whatever1")
    assert r.status_code == 403 and 'value="&#34;&gt;&lt;script&gt;"' in r.text and "<script>" not in r.text
    r = await hub.client.get("/hub/nowhere/<script>", headers={"Accept": "text/html"})
    assert r.status_code == 404 and 'id="error-title">404 Not Found</h1>' in r.text and "<script>" not in r.text


async def test_a_template_that_fails_is_a_500_naming_it(tmp_path: Path, settings: ServiceSettings,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "login.html").write_text('{% extends "page.html" %}{% block main %}{{ no_such_var }}{% endblock %}')
    settings = settings.model_copy(update={"pages": settings.pages.model_copy(update={"template_paths": [broken]})})
    async with running_hub(settings) as hub:
        with caplog.at_level(logging.ERROR):
            r = await hub.client.get("/hub/login")
        assert r.status_code == 500 and TEMPLATE_FAILED.replace("'", "&#39;") in r.text
        assert 'id="error-title">500 Internal Server Error</h1>' in r.text  # the built-in error page, which works
        assert "page template login.html failed to render: UndefinedError: 'no_such_var' is undefined" in caplog.text


def test_bad_template_paths_stop_the_start(tmp_path: Path, settings: ServiceSettings) -> None:
    for bad, message in [([tmp_path / "missing"], r"missing is not a directory"),
                         ([tmp_path / "templates", tmp_path / "logo.svg"], r"logo.svg is not a directory")]:
        pages = settings.pages.model_copy(update={"template_paths": bad})
        wrong = settings.model_copy(update={"pages": pages})
        for create in (create_auth, create_api):
            with pytest.raises(ConfigError, match=rf"\[pages\] template_paths: .*{message}"):
                create(wrong)
    (tmp_path / "templates" / "home.html").write_text("{% if %}")
    with pytest.raises(ConfigError, match=r"template_paths: .*home.html, line 1: "):
        create_auth(settings)
