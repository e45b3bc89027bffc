"""The auth pages render every value as inert text."""

from __future__ import annotations

from fleethub.services.auth.pages import login_page, signup_page


def test_login_page_escapes_everything() -> None:
    page = login_page('x"><script>', "/hub/home'><img src=x onerror=alert(1)>", error="<b>bad</b>",
                      username='"><svg onload=alert(1)>')
    assert "<script>" not in page and "<img" not in page and "<svg" not in page and "<b>bad" not in page
    assert 'action="/hub/login?next=/hub/home%27%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"' in page
    assert "/hub/signup" not in page and "/hub/signup" in login_page("x", "/", signup=True)


def test_signup_page() -> None:
    assert 'action="/hub/signup"' in signup_page("t")
    assert "&lt;eve&gt;" in signup_page("t", done="<eve>")
