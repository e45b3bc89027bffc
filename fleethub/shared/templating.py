"""The hub's page templates (Jinja2, autoescaped): one environment per service process.

Templates are found first in `[pages] template_paths`, then in the package (`fleethub/templates/`), so a
deployment replaces any page by a file of the same name, or extends the built-in one
(`{% extends "templates/page.html" %}` names the built-in file whatever overrides it). Every template sees:
`static_url(path)` (a file of `fleethub/static/`, served at /hub/static/ with a version query), `logo_url`
(None without `logo_file`), the `[pages] template_vars`, `announcement` (see `Templates.render`) and what the
page passes. `page.html` is the base: its blocks are `title`, `head`, `announcement`, `main` and `scripts`;
its navigation bar reads `nav` (a `Nav`, None on pages of a visitor who is not logged in).

The deployment's templates are compiled when the service starts (a syntax error stops it, naming the file
and line); an error while rendering is logged with the template's name and answered as a 500 page.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)

from fleethub.shared.baseurl import public_location, public_path
from fleethub.shared.errors import ConfigError, FleethubError
from fleethub.shared.page_settings import PageSettings
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/hub/static/"
LOGO_URL = "/hub/logo"
TEMPLATE_FAILED = "This page could not be shown: one of the hub's page templates failed (see the hub's log)."


@dataclass(frozen=True)
class NavLink:
    """A link of the navigation bar."""

    label: str
    href: str


@dataclass(frozen=True)
class Nav:
    """What the navigation bar shows to a logged-in user."""

    user: str
    admin: bool = False
    """Holds `admin-ui`: the Admin link."""
    services: list[NavLink] = field(default_factory=list)
    """The hub's services marked `display` that the user may reach."""
    change_password: bool = False
    """The password authenticator: a "Change password" link."""


class TemplateFailed(FleethubError):
    """A page template raised while rendering (500); the log names the template."""


def file_version(data: bytes) -> str:
    """The version of a served file's content, as put in its URL (`?v=`): changes with the content."""
    return hashlib.sha256(data).hexdigest()[:12]


@cache
def static_version(path: str) -> str | None:
    """The version of `fleethub/static/<path>` (the packaged files do not change while a process runs);
    None if there is no such file."""
    file = STATIC_DIR / path
    return file_version(file.read_bytes()) if file.is_file() else None


def http_reason(status: int) -> str:
    """The reason phrase of an HTTP status ("Service Unavailable"), '' for an unknown one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def static_url(path: str) -> str:
    """The URL of a packaged static file, with a version that changes with its content (long caching)."""
    return f"{STATIC_PREFIX}{path}?v={static_version(path) or '0'}"


def logo_url(pages: PageSettings) -> str | None:
    """The logo's URL with its content's version, or None without `logo_file`.

    Raises:
        ConfigError: the logo file cannot be read.
    """
    if pages.logo_file is None:
        return None
    try:
        return f"{LOGO_URL}?v={file_version(pages.logo_file.read_bytes())}"
    except OSError as exc:
        raise ConfigError(f"[pages] logo_file {pages.logo_file} cannot be read: {exc.strerror or exc}") from None


def _check_paths(pages: PageSettings) -> None:
    for path in pages.template_paths:
        if not path.is_dir():
            raise ConfigError(f"[pages] template_paths: {path} is not a directory")


class Templates:
    """Renders the hub's pages with the deployment's templates first.

    Raises:
        ConfigError: a `template_paths` entry is not a directory, a template there does not compile, or
            the logo file cannot be read.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        pages = settings.pages
        _check_paths(pages)
        builtin = FileSystemLoader(str(PACKAGE_TEMPLATES))
        deployment = FileSystemLoader([str(p) for p in pages.template_paths])
        self.env = Environment(
            loader=ChoiceLoader([
                deployment,
                builtin,
                PrefixLoader({"templates": builtin}),  # the built-in file, even when overridden
            ]),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            auto_reload=False,
            enable_async=False,
        )
        self.template_vars = dict(pages.template_vars)
        base_url = self.base_url = settings.base_url
        logo = logo_url(pages)
        self.env.globals.update({
            "nav": None,
            "announcement": None,
            **self.template_vars,
            # ours win over a template var of the same name
            "static_url": lambda path: public_path(base_url, static_url(path)),
            "http_reason": http_reason,
            "logo_url": logo and public_path(base_url, logo),
            "hub_url": lambda path: public_location(base_url, path),  # a hub path as the browser sees it
            "base_url": base_url,
        })
        for name in deployment.list_templates():  # fail at start, not at a visitor's first page
            try:
                self.env.get_template(name)
            except TemplateSyntaxError as exc:
                raise ConfigError(f"[pages] template_paths: {exc.filename or name}, line {exc.lineno}: "
                                  f"{exc.message}") from None

    def render(self, name: str, **context: Any) -> str:
        """The page `name` (e.g. "login.html") rendered with `context`.

        `announcement` is, unless the page passes one, the template var `announcement_<page>` (e.g.
        `announcement_login` on login.html, as JupyterHub's), else `announcement`: shown by page.html.

        Raises:
            TemplateFailed: the template raised (an undefined variable, a bad filter…), logged with its name.
        """
        page = name.removesuffix(".html")
        if "announcement" not in context:
            context["announcement"] = self.template_vars.get(f"announcement_{page}",
                                                             self.template_vars.get("announcement"))
        try:
            return self.env.get_template(name).render(**context)
        except TemplateError as exc:
            log.error("page template %s failed to render: %s: %s", name, type(exc).__name__, exc)
            raise TemplateFailed(TEMPLATE_FAILED) from None
