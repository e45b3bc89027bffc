"""`auth.refresh_pre_spawn`: the owner's authentication is refreshed before their server starts; an expired
one ends their login sessions and refuses the start."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.authenticators import Authenticator
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.errors import Forbidden, Unavailable
from fleethub.shared.logins import stored_user
from fleethub.shared.refresh import RefreshFailed, apply, ask
from fleethub.shared.service import Runtime

log = logging.getLogger(__name__)

EXPIRED = "Your login has expired: log in again to start a server"


async def refresh_before_spawn(runtime: Runtime, session: AsyncSession, authenticator: Authenticator,
                               crypt: AuthStateCrypt, name: str) -> None:
    """With `auth.refresh_pre_spawn`, refresh `name` before a start of their server (nothing otherwise, nor for
    a user that does not exist: the start answers that).

    Raises:
        Forbidden: the authenticator says the login expired (the user's login sessions are ended).
        Unavailable: `refresh_user` failed (nothing decided: the start may be asked again).
    """
    if not runtime.settings.auth.refresh_pre_spawn:
        return
    async with session.begin():
        user = await stored_user(session, crypt, name)
    if user is None:
        return
    try:
        answer = await ask(authenticator, user)  # outside any transaction: it may ask the provider
    except RefreshFailed as exc:
        log.warning("refreshing user %s before a spawn failed: %s", name, exc)
        raise Unavailable("Could not check your login with the authenticator; try again shortly") from exc
    async with session.begin():
        holds = await apply(session, runtime.settings, crypt, authenticator, user, answer)
    if answer is not True:
        runtime.relay.kick()  # what changed (groups, a logout) is announced now
    if not holds:
        raise Forbidden(EXPIRED)
