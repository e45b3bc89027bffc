"""What the authenticator adds to a spawn, in the worker: the user's auth_state (decrypted, with
`auth.enable_auth_state`) on the spec, and the authenticator's `pre_spawn_start`, before the pre-spawn hook."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleethub.services.spawner.backends import ServerSpec
from fleethub.services.spawner.hooks import HookFailed, checked_spec
from fleethub.shared.authenticators import Authenticator, AuthUser
from fleethub.shared.crypt import AuthStateCrypt
from fleethub.shared.logins import stored_user
from fleethub.shared.settings import ServiceSettings

log = logging.getLogger(__name__)


class SpawnAuth:
    """One worker's authenticator (loaded once, at start) and auth_state keys."""

    def __init__(self, settings: ServiceSettings, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self.enabled = settings.auth.enable_auth_state
        self.crypt = AuthStateCrypt(settings.auth.crypt_keys)
        self.who = f"the {authenticator.name or type(authenticator).__name__} authenticator's pre_spawn_start"
        # the built-ins leave the spec alone: then a spawn without auth_state costs nothing here
        self.idle = not self.enabled and type(authenticator).pre_spawn_start is Authenticator.pre_spawn_start

    async def user(self, sessions: async_sessionmaker[AsyncSession], name: str) -> AuthUser:
        """`name` with admin flag, groups and auth_state as stored (one query); only the name while auth_state
        is off (no query: a spawn's cost stays as it was)."""
        if not self.enabled:
            return AuthUser(name)
        async with sessions() as session:
            user = await stored_user(session, self.crypt, name)
        return user or AuthUser(name)  # deleted meanwhile: the api stops its servers

    async def prepare(self, sessions: async_sessionmaker[AsyncSession], spec: ServerSpec) -> ServerSpec:
        """`spec` with the user's auth_state, as the authenticator's `pre_spawn_start` leaves it.

        Raises:
            HookFailed: `pre_spawn_start` raised (its message), took longer than `spawner.start_timeout`, or
                returned something other than None or a spec of the same server.
        """
        if self.idle:
            return spec
        user = await self.user(sessions, spec.user)
        spec = dataclasses.replace(spec, auth_state=user.auth_state)
        timeout = spec.config.start_timeout
        try:
            result = await asyncio.wait_for(self.authenticator.pre_spawn_start(user, spec), timeout)
        except TimeoutError:
            raise HookFailed(f"{self.who} did not return within {timeout:g}s (spawner.start_timeout)") from None
        except Exception as exc:
            # the message only: a traceback's locals could show auth_state
            log.warning("%s refused the spawn %s of %s/%s: %s", self.who, spec.spawn_id, spec.user, spec.server_name,
                        type(exc).__name__)
            raise HookFailed(str(exc) or type(exc).__name__) from exc
        return checked_spec(result, spec, self.who)
