"""The templates: a deployment's files replace or extend the built-in ones, see template_vars and the logo;
broken ones are refused at start (syntax) or logged by name (rendering)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import load_settings
from fleethub.shared.templating import TemplateFailed, Templates, static_url, static_version


def _templates(**pages: Any) -> Templates:
    return Templates(load_settings(None, pages=pages))


def test_a_deployment_file_replaces_or_extends_the_builtin(tmp_path: Path) -> None:
    (tmp_path / "signup.html").write_text('{% extends "page.html" %}{% block main %}Ours {{ xsrf }}{% endblock %}')
    (tmp_path / "login.html").write_text('{% extends "templates/login.html" %}'
                                         "{% block login_message %}<p>Welcome, {{ org }}</p>{% endblock %}")
    t = _templates(template_paths=[tmp_path], template_vars={"org": "<ACME>"})
    assert "Ours &lt;t&gt;" in t.render("signup.html", xsrf="<t>")
    login = t.render("login.html", xsrf="x", error="", username="", signup=False, login_service="", login_url="",
                     form_action="/hub/login")
    assert "<p>Welcome, &lt;ACME&gt;</p>" in login and 'id="username"' in login  # the built-in form is kept


def test_announcements_per_page_as_jupyterhub() -> None:
    t = _templates(template_vars={"announcement": "All <b>pages</b>", "announcement_login": "Login only"})
    login = t.render("error.html", status=500, message="m", url="", retry=False)
    assert 'class="announcement"' in login and "All &lt;b&gt;pages&lt;/b&gt;" in login
    assert "Login only" in t.render("login.html", xsrf="x", error="", username="", signup=False, login_service="",
                                    login_url="", form_action="/")
    assert 'class="announcement"' not in _templates().render("error.html", status=500, message="m", url="",
                                                             retry=False)


def test_logo_url_carries_the_files_version(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG one")
    first = _templates(logo_file=logo).render("error.html", status=404, message="m", url="", retry=False)
    logo.write_bytes(b"\x89PNG two")
    second = _templates(logo_file=logo).render("error.html", status=404, message="m", url="", retry=False)
    assert '<img src="/hub/logo?v=' in first and first != second
    assert "<img" not in _templates().render("error.html", status=404, message="m", url="", retry=False)
    with pytest.raises(ConfigError, match=r"\[pages\] logo_file .*gone.png cannot be read"):
        _templates(logo_file=tmp_path / "gone.png")


def test_static_url_versions_packaged_files() -> None:
    version = static_version("fleethub.css")
    assert version and static_url("fleethub.css") == f"/hub/static/fleethub.css?v={version}"
    assert static_version("nope.css") is None


def test_missing_directory_and_syntax_errors_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[pages\] template_paths: .*/nowhere is not a directory"):
        _templates(template_paths=[tmp_path / "nowhere"])
    (tmp_path / "login.html").write_text("{% block main %}unclosed")
    with pytest.raises(ConfigError, match=r"template_paths: .*login.html, line 1: .*"):
        _templates(template_paths=[tmp_path])


def test_a_render_error_is_logged_with_the_template_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "error.html").write_text("{{ no_such_variable }}")
    t = _templates(template_paths=[tmp_path])
    with caplog.at_level(logging.ERROR), pytest.raises(TemplateFailed) as failed:
        t.render("error.html", status=500, message="m", url="", retry=False)
    assert failed.value.status == 500
    assert "page template error.html failed to render: UndefinedError: 'no_such_variable' is undefined" in caplog.text
