"""The built-in form logins without an outside system: `password` (accounts in PostgreSQL) and `dummy`."""

from __future__ import annotations

import hmac

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.accounts import check_password
from fleethub.shared.authenticators.base import Authenticator, AuthUser, LoginRefused
from fleethub.shared.errors import ConfigError
from fleethub.shared.names import legacy_username
from fleethub.shared.settings import ServiceSettings

PENDING_APPROVAL = "Your account is waiting for an administrator's approval."


class PasswordAuthenticator(Authenticator):
    """Accounts in PostgreSQL, scrypt-hashed; unknown names cost as much time as known ones. While
    `auth.allowed_users` is empty, an approved account is itself an allow rule: someone with the right to
    make accounts made it (an admin, `fleethub passwd`, an approved sign-up). With allowed_users set, the
    list (and allow_existing_users) decides. A sign-up waiting for approval is refused with a message saying
    so, only when its password was right (a wrong one gets the usual answer, so nothing is revealed)."""

    name = "password"
    stored_names = True

    @property
    def grants_access(self) -> bool:
        return not self.settings.auth.allowed_users

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> AuthUser | None:
        """The user's name as stored; its row stays locked against rename/delete until the transaction ends."""
        name = self.normalize_name(username)
        if name is None:
            return None
        legacy = legacy_username(username)  # a row made before NFKC normalization keeps its name
        found = await check_password(session, [name] if legacy == name else [name, legacy], password)
        if found is None:
            return None
        if not found.approved:
            raise LoginRefused(PENDING_APPROVAL, 403)
        return AuthUser(found.name, allowed=self.grants_access or None)


class DummyAuthenticator(Authenticator):
    """Development only: any user name with the one configured password."""

    name = "dummy"

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        secret = settings.auth.dummy_password
        if secret is None:
            raise ConfigError(
                "auth.dummy_password (FLEETHUB_AUTH__DUMMY_PASSWORD) must be set for the dummy authenticator"
            )
        self._password = secret.get_secret_value().encode()

    def default_allow_all(self) -> bool:
        # as JupyterHub's DummyAuthenticator: everyone, unless an allow list says otherwise
        return not self.settings.auth.allowed_users

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> AuthUser | None:
        name = self.normalize_name(username)
        if name is None:
            return None
        return AuthUser(name) if hmac.compare_digest(password.encode(), self._password) else None
