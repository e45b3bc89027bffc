"""Authenticators: a small interface, the built-in `password` and `dummy`, and how one is chosen."""

from __future__ import annotations

import hmac
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import BadRequest, ConfigError
from shared.plugins import load_plugin
from shared.settings import ServiceSettings

from services.auth.accounts import check_password
from shared.names import normalize_username

ENTRY_POINT_GROUP = "fleethub.authenticators"


class Authenticator(Protocol):
    """Checks credentials; returns the normalized user name, or None to refuse."""

    name: str

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> str | None: ...


class PasswordAuthenticator:
    """Accounts in PostgreSQL, scrypt-hashed."""

    name = "password"

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> str | None:
        try:
            name = normalize_username(username)
        except BadRequest:
            return None
        return name if await check_password(session, name, password) else None


class DummyAuthenticator:
    """Development only: any user name with the one configured password."""

    name = "dummy"

    def __init__(self, settings: ServiceSettings) -> None:
        secret = settings.auth.dummy_password
        if secret is None:
            raise ConfigError("auth.dummy_password (FLEETHUB_AUTH__DUMMY_PASSWORD) must be set for the dummy authenticator")
        self._password = secret.get_secret_value().encode()

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> str | None:
        try:
            name = normalize_username(username)
        except BadRequest:
            return None
        return name if hmac.compare_digest(password.encode(), self._password) else None


def load_authenticator(settings: ServiceSettings) -> Authenticator:
    """The authenticator named by `auth.authenticator` (entry points first, then the built-ins).

    Raises:
        ConfigError: no such authenticator.
    """
    cls = load_plugin(ENTRY_POINT_GROUP, settings.auth.authenticator,
                      {"password": lambda: PasswordAuthenticator, "dummy": lambda: DummyAuthenticator},
                      "auth.authenticator (FLEETHUB_AUTH__AUTHENTICATOR)")
    return cls(settings)  # type: ignore[no-any-return]


def allowed(settings: ServiceSettings, name: str) -> bool:
    """The allow/block lists, applied after any authenticator (admins are always allowed unless blocked)."""
    a = settings.auth
    if name in {u.lower() for u in a.blocked_users}:
        return False
    if a.allowed_users and name not in {u.lower() for u in a.allowed_users} | {u.lower() for u in a.admin_users}:
        return False
    return True
