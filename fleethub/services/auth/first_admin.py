"""The first admins' accounts from `auth.initial_admin_password_file`, made when the auth service starts.

For deployments without `fleethub up` (compose, Kubernetes): the operator mounts a file only its owner may
read, and every `admin_users` entry without a password account gets one with that password. An existing
account is never touched, so the file may stay (and later change) without resetting anyone's password.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleethub.shared.accounts import create_missing_accounts
from fleethub.shared.errors import BadRequest, ConfigError
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)
SETTING = "auth.initial_admin_password_file (FLEETHUB_AUTH__INITIAL_ADMIN_PASSWORD_FILE)"


def read_initial_password(path: Path) -> str:
    """The password on the file's first line.

    Raises:
        ConfigError: the file is missing or unreadable, others may read or write it, or it is empty.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(f"{SETTING}: cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, encoding="utf-8") as file:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            raise ConfigError(f"{SETTING}: {path} has mode {mode:04o}; only its owner may read it (make it 0600)")
        line = file.readline().rstrip("\r\n")
    if not line:
        raise ConfigError(f"{SETTING}: {path} is empty (its first line is the password)")
    return line


async def create_first_admins(sessions: async_sessionmaker[AsyncSession], settings: ServiceSettings) -> list[str]:
    """Give each admin without a password account one with the file's password; returns their names.

    Raises:
        ConfigError: the file can not be used, or its password breaks the `[auth.password]` rules.
    """
    auth = settings.auth
    if auth.initial_admin_password_file is None:
        return []
    if auth.authenticator != "password":
        log.warning("%s is ignored: the %s authenticator has no password accounts", SETTING, auth.authenticator)
        return []
    if not auth.admin_users:
        log.warning("%s is set but auth.admin_users is empty: no account to create", SETTING)
        return []
    password = read_initial_password(auth.initial_admin_password_file)
    try:
        async with sessions() as session, session.begin():
            created = await create_missing_accounts(session, auth.admin_users, password, auth.password)
    except BadRequest as exc:
        raise ConfigError(f"{SETTING}: the password is refused: {exc.message}") from None
    for name in created:
        log.info("password account of admin %s created from the initial-password file", name)
    return created
