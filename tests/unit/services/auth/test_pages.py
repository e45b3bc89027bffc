"""The auth pages render every value as inert text, from the built-in templates."""

from __future__ import annotations

from fleethub.services.auth.pages import change_password_page, consent_page, error_page, login_page, signup_page
from fleethub.shared.settings import load_settings
from fleethub.shared.templating import Nav, Templates


def _templates() -> Templates:
    return Templates(load_settings(None))


def test_login_page_escapes_everything() -> None:
    t = _templates()
    page = login_page(t, 'x"><script>', "/hub/home'><img src=x onerror=alert(1)>", error="<b>bad</b>",
                      username='"><svg onload=alert(1)>')
    assert "<script>" not in page and "<img" not in page and "<svg" not in page and "<b>bad" not in page
    assert 'action="/hub/login?next=/hub/home%27%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"' in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page and 'role="alert"' in page
    assert "/hub/signup" not in page and "/hub/signup" in login_page(t, "x", "/", signup=True)
    # a visitor who is not logged in has no navigation bar
    assert "Sign out" not in page and 'aria-label="Hub"' in page


def test_redirect_login_shows_the_button_only() -> None:
    page = login_page(_templates(), "x", "/hub/home", login_service="Test <OIDC>")
    assert 'id="login-button" href="/hub/oauth_login?next=/hub/home">Sign in with Test &lt;OIDC&gt;</a>' in page
    assert 'name="password"' not in page


def test_signup_page() -> None:
    t = _templates()
    assert 'action="/hub/signup"' in signup_page(t, "t")
    assert "&lt;eve&gt;" in signup_page(t, "t", done="<eve>")
    assert "waits for an administrator" in signup_page(t, "t", done="eve", pending=True)


def test_pages_of_a_logged_in_user_show_the_nav() -> None:
    t = _templates()
    nav = Nav(user="<alice>", admin=True, change_password=True)
    page = change_password_page(t, "tok", nav)
    assert "&lt;alice&gt;" in page and "<alice>" not in page and 'href="/hub/admin"' in page
    assert 'href="/hub/logout">Sign out' in page and 'name="password_again"' in page
    consent = consent_page(t, "tok", Nav(user="bob"), "the server <x>/", {"state": '"><script>', "client_id": "c"})
    assert "<script>" not in consent and "the server &lt;x&gt;/" in consent and 'href="/hub/admin"' not in consent
    assert 'name="_xsrf" value="tok"' in consent and 'name="client_id" value="c"' in consent


def test_error_page() -> None:
    t = _templates()
    page = error_page(t, 403, "<i>no</i>", retry=True)
    assert '<h1 id="error-title">403 Forbidden</h1>' in page and "&lt;i&gt;no&lt;/i&gt;" in page
    assert 'href="/hub/login">Sign in again' in page
