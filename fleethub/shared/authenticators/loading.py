"""Choosing the authenticator (`auth.authenticator`) and taking its answers."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from fleethub.shared.authenticators.base import Authenticator, AuthUser
from fleethub.shared.authenticators.local import DummyAuthenticator, PasswordAuthenticator
from fleethub.shared.authenticators.rules import has_allow_rule
from fleethub.shared.errors import ConfigError
from fleethub.shared.plugins import load_plugin
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "fleethub.authenticators"
SETTING = "auth.authenticator (FLEETHUB_AUTH__AUTHENTICATOR)"


def _builtin(module: str, cls: str) -> Callable[[], type]:
    def load() -> type:
        loaded: type = getattr(importlib.import_module(f"fleethub.shared.authenticators.{module}"), cls)
        return loaded
    return load


BUILTIN: dict[str, Callable[[], type]] = {
    "password": lambda: PasswordAuthenticator,
    "dummy": lambda: DummyAuthenticator,
    "oauth": _builtin("oauth", "OAuthAuthenticator"),
    "github": _builtin("github", "GitHubAuthenticator"),
    "ldap": _builtin("ldap", "LdapAuthenticator"),
    "pam": _builtin("pam", "PamAuthenticator"),
}


def load_authenticator(settings: ServiceSettings) -> Authenticator:
    """The authenticator named by `auth.authenticator` (entry points first, then the built-ins, then an
    import path 'module:Class').

    Raises:
        ConfigError: no such authenticator, or it is not an `Authenticator`.
    """
    cls = load_plugin(ENTRY_POINT_GROUP, settings.auth.authenticator, BUILTIN, SETTING)
    if not (isinstance(cls, type) and issubclass(cls, Authenticator)):
        raise ConfigError(f"{SETTING}: {settings.auth.authenticator!r} is not a subclass of "
                          "fleethub.shared.authenticators.Authenticator")
    authenticator: Authenticator = cls(settings)
    return authenticator


def as_user(authenticator: Authenticator, answer: AuthUser | str | None) -> AuthUser | None:
    """An authenticator's answer as an `AuthUser` with a normalized name (a str is a name); None if it
    refused or named no valid hub user."""
    if answer is None:
        return None
    user = AuthUser(answer) if isinstance(answer, str) else answer
    if authenticator.stored_names:
        return user
    name = authenticator.normalize_name(user.name)
    if name is None:
        log.warning("the %s authenticator answered with a name that is not a valid hub user name: %r",
                    authenticator.name, user.name[:64])
        return None
    return user if name == user.name else user.with_(name=name)


def warn_without_allow_rule(authenticator: Authenticator) -> None:
    """At start: say so when nobody but the admins can log in."""
    if not has_allow_rule(authenticator):
        log.warning("no allow rule is configured (auth.allow_all, allowed_users, allowed_groups, "
                    "allow_existing_users): only admin_users can log in")
