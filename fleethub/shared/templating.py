"""The hub's page templates (Jinja2, autoescaped): one environment per service process.

Templates are found first in `[pages] template_paths`, then in the package (`fleethub/templates/`), so a
deployment replaces any page by a file of the same name, or extends the built-in one
(`{% extends "templates/page.html" %}` names the built-in file whatever overrides it). Every template sees:
`static_url(path)` (a file of `fleethub/static/`, served at /hub/static/ with a version query), `logo_url`
(None without `logo_file`), the `[pages] template_vars`, and what the page passes. `page.html` is the base:
its blocks are `title`, `main` and `scripts`; its navigation bar reads `nav` (a `Nav`, None on pages of a
visitor who is not logged in).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, StrictUndefined, select_autoescape

from fleethub.shared.settings import ServiceSettings

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/hub/static/"
LOGO_URL = "/hub/logo"


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


@cache
def _static_version(path: str) -> str:
    file = STATIC_DIR / path
    return hashlib.sha256(file.read_bytes()).hexdigest()[:12] if file.is_file() else "0"


def static_url(path: str) -> str:
    """The URL of a packaged static file, with a version that changes with its content (long caching)."""
    return f"{STATIC_PREFIX}{path}?v={_static_version(path)}"


class Templates:
    """Renders the hub's pages with the deployment's templates first."""

    def __init__(self, settings: ServiceSettings) -> None:
        pages = settings.pages
        builtin = FileSystemLoader(str(PACKAGE_TEMPLATES))
        self.env = Environment(
            loader=ChoiceLoader([
                FileSystemLoader([str(p) for p in pages.template_paths]),
                builtin,
                PrefixLoader({"templates": builtin}),  # the built-in file, even when overridden
            ]),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            auto_reload=False,
            enable_async=False,
        )
        self.env.globals.update(
            static_url=static_url,
            logo_url=LOGO_URL if pages.logo_file else None,
            nav=None,
            **pages.template_vars,
        )

    def render(self, name: str, **context: Any) -> str:
        """The page `name` (e.g. "login.html") rendered with `context`."""
        return self.env.get_template(name).render(**context)
