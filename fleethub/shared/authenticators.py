"""Authenticators: a small interface, the built-in `password` and `dummy`, and how one is chosen.

Third parties add their own through the entry point group `fleethub.authenticators`: a class taking
the settings, with a `name` and `authenticate()`. The allow/block lists apply after any of them.
Shared because two services check credentials: auth at login, the api for the `auth` credentials of
a token request (JupyterHub's scripts).
"""

from __future__ import annotations

import hmac
from importlib.metadata import entry_points
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.accounts import check_password
from fleethub.shared.errors import BadRequest, ConfigError
from fleethub.shared.names import legacy_username, normalize_username
from fleethub.shared.settings import ServiceSettings

ENTRY_POINT_GROUP = "fleethub.authenticators"


class Authenticator(Protocol):
    """Checks credentials; returns the normalized user name, or None to refuse."""

    name: str

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> str | None:
        """The normalized user name if `password` is right for `username`, else None."""
        ...


def _normalized(username: str) -> str | None:
    try:
        return normalize_username(username)
    except BadRequest:
        return None


class PasswordAuthenticator:
    """Accounts in PostgreSQL, scrypt-hashed; unknown names cost as much time as known ones."""

    name = "password"

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> str | None:
        """The user's name as stored; its row stays locked against rename/delete until the transaction ends."""
        name = _normalized(username)
        if name is None:
            return None
        legacy = legacy_username(username)  # a row made before NFKC normalization keeps its name
        return await check_password(session, [name] if legacy == name else [name, legacy], password)


class DummyAuthenticator:
    """Development only: any user name with the one configured password."""

    name = "dummy"

    def __init__(self, settings: ServiceSettings) -> None:
        secret = settings.auth.dummy_password
        if secret is None:
            raise ConfigError(
                "auth.dummy_password (FLEETHUB_AUTH__DUMMY_PASSWORD) must be set for the dummy authenticator"
            )
        self._password = secret.get_secret_value().encode()

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> str | None:
        name = _normalized(username)
        if name is None:
            return None
        return name if hmac.compare_digest(password.encode(), self._password) else None


BUILTIN: dict[str, type[PasswordAuthenticator] | type[DummyAuthenticator]] = {
    "password": PasswordAuthenticator,
    "dummy": DummyAuthenticator,
}


def load_authenticator(settings: ServiceSettings) -> Authenticator:
    """The authenticator named by `auth.authenticator` (entry points first, then the built-ins).

    Raises:
        ConfigError: no such authenticator.
    """
    name = settings.auth.authenticator
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            authenticator: Authenticator = ep.load()(settings)
            return authenticator
    if name in BUILTIN:
        return BUILTIN[name](settings)
    raise ConfigError(f"auth.authenticator (FLEETHUB_AUTH__AUTHENTICATOR): unknown authenticator {name!r}")


def allowed(settings: ServiceSettings, name: str) -> bool:
    """The allow/block lists (normalized when settings load), applied after any authenticator (admins are
    allowed unless blocked)."""
    a = settings.auth
    if name in a.blocked_users:
        return False
    return not a.allowed_users or name in a.allowed_users or name in a.admin_users
