"""Login throttling: after repeated failed password attempts, a user name or a client address has to wait.

Every place that checks a password (auth's `/hub/login` and `/hub/change-password`, the api's token request
with an `auth` body) asks `admit` first, in a transaction of its own; `/hub/signup` does too, per client
address. The state is in PostgreSQL (`login_throttle`), so every replica counts into the same rows: spraying
replicas gains nothing.

- An attempt is counted *before* its password is checked, so a burst of parallel guesses is counted in
  full; a failure (`failed`) then starts the wait again from its answer. While a wait runs, nothing is
  counted and the password is not checked at all (a right guess during the wait reveals nothing).
- The first `throttle_free_attempts` failures of a name cost nothing; then each wait doubles from
  `throttle_base_delay_seconds` up to `throttle_max_delay_seconds`. A client address has its own,
  larger allowance and cap.
- A success resets the name's count and takes the attempt back from the client's count (a client's
  count is not reset: logging into one's own account between guesses must not clear it).
- The name's cap bounds what a guesser can do to the real user: they wait at most that long, from
  anywhere. Failures older than `throttle_forget_seconds` are forgotten.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import LoginThrottle
from fleethub.shared.events import utcnow
from fleethub.shared.settings import AuthSettings

USER = "user"
CLIENT = "client"
SIGNUP = "signup"  # sign-ups of one client address (`/hub/signup`), counted apart from its logins
_CLEANUP_CHANCE = 0.01  # one attempt in a hundred deletes the forgotten rows


@dataclass(frozen=True)
class Attempt:
    """One password attempt: the normalized user name tried and the client address it came from."""

    user: str
    client: str
    signup: bool = False
    """A sign-up rather than a login: counted for the client address alone (every sign-up counts, none is
    taken back), with the client's allowance and cap."""

    def keys(self) -> list[tuple[str, str]]:
        """The throttle rows it counts in, in lock order."""
        if self.signup:
            return [(SIGNUP, self.client[:255])]
        return [(CLIENT, self.client[:255]), (USER, self.user[:255])]


def delay(failures: int, *, free: int, base: float, cap: float) -> float:
    """Seconds the next attempt waits after `failures` counted attempts."""
    if failures < free:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - free, 60))


def _policy(settings: AuthSettings, scope: str) -> tuple[int, float]:
    if scope == USER:
        return settings.throttle_free_attempts, settings.throttle_max_delay_seconds
    return settings.throttle_client_free_attempts, settings.throttle_client_max_delay_seconds


async def admit(session: AsyncSession, settings: AuthSettings, attempt: Attempt) -> float:
    """Count `attempt` and return 0.0, or return the seconds it must still wait (and count nothing).

    Run it in its own transaction and commit before checking the password, so other replicas see it.
    """
    now = utcnow()
    keys = attempt.keys()
    await session.execute(
        insert(LoginThrottle)
        .values([{"scope": s, "key": k, "failures": 0, "last_attempt": now, "blocked_until": now} for s, k in keys])
        .on_conflict_do_nothing()
    )
    rows = (await session.execute(
        select(LoginThrottle.scope, LoginThrottle.key, LoginThrottle.failures, LoginThrottle.last_attempt,
               LoginThrottle.blocked_until)
        .where(tuple_(LoginThrottle.scope, LoginThrottle.key).in_(keys))
        .order_by(LoginThrottle.scope, LoginThrottle.key)
        .with_for_update()  # concurrent attempts on the same name or address count one after the other
    )).all()
    # the clock read again once the rows are ours: a concurrent attempt's `failed`, which held them meanwhile,
    # may have set a wait of nothing at a later `now` than ours (a spurious 429 of a few milliseconds)
    now = utcnow()
    wait: float = max((row.blocked_until - now).total_seconds() for row in rows)
    if wait > 0:
        return wait
    forget = timedelta(seconds=settings.throttle_forget_seconds)
    for row in rows:
        failures = (0 if now - row.last_attempt > forget else row.failures) + 1
        free, cap = _policy(settings, row.scope)
        pause = delay(failures, free=free, base=settings.throttle_base_delay_seconds, cap=cap)
        await session.execute(
            update(LoginThrottle).where(LoginThrottle.scope == row.scope, LoginThrottle.key == row.key)
            .values(failures=failures, last_attempt=now, blocked_until=now + timedelta(seconds=pause))
        )
    if random.random() < _CLEANUP_CHANCE:
        await session.execute(delete(LoginThrottle).where(
            LoginThrottle.last_attempt < now - forget, LoginThrottle.blocked_until < now))
    return 0.0


async def failed(session: AsyncSession, settings: AuthSettings, attempt: Attempt) -> None:
    """The password was wrong: the wait `admit` set starts again from now (checking it took time)."""
    now = utcnow()
    rows = (await session.execute(
        select(LoginThrottle.scope, LoginThrottle.key, LoginThrottle.failures, LoginThrottle.blocked_until)
        .where(tuple_(LoginThrottle.scope, LoginThrottle.key).in_(attempt.keys()))
        .order_by(LoginThrottle.scope, LoginThrottle.key)
        .with_for_update()
    )).all()
    for row in rows:
        free, cap = _policy(settings, row.scope)
        pause = delay(row.failures, free=free, base=settings.throttle_base_delay_seconds, cap=cap)
        until = now + timedelta(seconds=pause)
        if pause > 0 and until > row.blocked_until:  # no wait owed: nothing to start again
            await session.execute(
                update(LoginThrottle).where(LoginThrottle.scope == row.scope, LoginThrottle.key == row.key)
                .values(blocked_until=until)
            )


async def succeeded(session: AsyncSession, attempt: Attempt) -> None:
    """The password was right: the name starts afresh, the client's count loses this attempt again."""
    await session.execute(delete(LoginThrottle).where(LoginThrottle.scope == USER, LoginThrottle.key == attempt.user))
    await session.execute(
        update(LoginThrottle).where(LoginThrottle.scope == CLIENT, LoginThrottle.key == attempt.client[:255],
                                    LoginThrottle.failures > 0)
        .values(failures=LoginThrottle.failures - 1)
    )


def retry_message(wait: float) -> tuple[str, int]:
    """The message shown while throttled and the whole seconds for `Retry-After`."""
    seconds = max(1, int(wait + 0.999))
    return f"Too many failed login attempts; try again in {seconds} seconds.", seconds
