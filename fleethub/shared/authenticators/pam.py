"""The built-in `pam` authenticator: the host's Unix accounts, checked by PAM (JupyterHub's PAMAuthenticator).

PAM through `pamela` (JupyterHub's own binding, already what its PAMAuthenticator uses; one ctypes module with
authenticate, account check and session calls on handles it opens and ends itself, so any thread may make
them), rather than python-pam, whose account check and sessions hang off one stateful handle object.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pamela
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.authenticators.base import Authenticator, AuthUser
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Linux-PAM's codes for an account that exists and authenticated but may not log in now (pamela has no names)
PAM_PERM_DENIED, PAM_NEW_AUTHTOK_REQD, PAM_ACCT_EXPIRED, PAM_AUTHTOK_EXPIRED = 6, 12, 13, 27
ACCOUNT_REFUSALS = frozenset({PAM_PERM_DENIED, PAM_NEW_AUTHTOK_REQD, PAM_ACCT_EXPIRED, PAM_AUTHTOK_EXPIRED})


@dataclass(frozen=True)
class UnixAccount:
    """A local account as the name service knows it."""

    name: str
    groups: list[str]
    """Names of its primary and supplementary groups, sorted."""


def unix_account(name: str) -> UnixAccount | None:
    """The account `name` (exactly that name) with its groups, or None if there is none (blocking: NSS)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_name != name:  # a name service that matches loosely (case, aliases) names another account
        return None
    groups = set()
    for gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
        try:
            groups.add(grp.getgrgid(gid).gr_name)
        except KeyError:  # a gid without a group entry has no name to match
            continue
    return UnixAccount(entry.pw_name, sorted(groups))


def pam_refusal(exc: pamela.PAMError) -> str:
    """What PAM said, for the log (never the password: PAM's messages do not carry it)."""
    return f"{exc.message} (PAM code {exc.errno})"


class PamAuthenticator(Authenticator):
    """Unix accounts through PAM service `auth.pam.service`: the hub user name is the Unix name, the user's
    Unix groups are their groups (for `admin_groups` / `allowed_groups` of `[auth]` and `[auth.pam]`).

    Every PAM call blocks a thread (pam_unix's failure delay holds it 2–3 s), so each runs in a worker
    thread, at most `auth.pam.max_concurrent` at once; further logins wait for a slot, never the event loop.
    """

    name = "pam"

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__(settings)
        self.pam = settings.auth.pam
        self._slots = asyncio.Semaphore(self.pam.max_concurrent)  # binds to the loop at first use, not here

    @property
    def allowed_groups(self) -> list[str]:
        return _union(self.settings.auth.allowed_groups, self.pam.allowed_groups)

    @property
    def admin_groups(self) -> list[str]:
        return _union(self.settings.auth.admin_groups, self.pam.admin_groups)

    async def _blocking(self, call: Callable[..., T], *args: str) -> T:
        async with self._slots:
            return await asyncio.to_thread(call, *args)

    async def authenticate(self, session: AsyncSession, username: str, password: str) -> AuthUser | None:
        """The Unix account `username` if PAM accepts `password` (and, with `check_account`, the account)."""
        if not password:
            return None
        if self.normalize_name(username) != username:
            # the hub name must be the Unix name itself: else 'Alice' and 'alice' (two accounts) were one hub user
            log.info("pam: refused %r: not a hub user name as it is (user names are lowercase)", username[:64])
            return None
        account = await self._blocking(self._check, username, password)
        return None if account is None else AuthUser(account.name, groups=account.groups)

    def _check(self, username: str, password: str) -> UnixAccount | None:
        try:
            pamela.authenticate(username, password, service=self.pam.service, encoding=self.pam.encoding,
                                check=self.pam.check_account)
        except pamela.PAMError as exc:
            if exc.errno in ACCOUNT_REFUSALS:
                log.warning("pam: account %r may not log in: %s", username, pam_refusal(exc))
            else:
                log.info("pam: refused %r: %s", username, pam_refusal(exc))
            return None
        except UnicodeEncodeError:
            log.info("pam: refused %r: not representable in auth.pam.encoding %s", username, self.pam.encoding)
            return None
        account = unix_account(username)
        if account is None:
            log.warning("pam: service %s accepted %r, which is no local account: refused", self.pam.service, username)
        return account

    async def logged_in(self, name: str) -> None:
        """With `open_sessions`: open a PAM session for the user."""
        if self.pam.open_sessions:
            await self._session(pamela.open_session, "opened", name)

    async def logged_out(self, name: str) -> None:
        """With `open_sessions`: close the user's PAM session."""
        if self.pam.open_sessions:
            await self._session(pamela.close_session, "closed", name)

    async def _session(self, call: Callable[[str, str, str], None], done: str, name: str) -> None:
        try:
            await self._blocking(call, name, self.pam.service, self.pam.encoding)
        except (pamela.PAMError, UnicodeEncodeError) as exc:
            # as JupyterHub: a session module's failure does not undo the login or the logout
            log.warning("pam: a PAM session for %s could not be %s: %s", name, done, exc)
        else:
            log.info("pam: %s a PAM session for %s (service %s)", done, name, self.pam.service)


def _union(*lists: list[str]) -> list[str]:
    return list(dict.fromkeys(g for names in lists for g in names))
