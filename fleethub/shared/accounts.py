"""Password accounts of the `password` authenticator, and the users they log in as.

Shared because more than the auth service writes or checks them: `fleethub up` sets the first
admin's password, and the api checks passwords through the authenticator (`shared/authenticators.py`).
"""

from __future__ import annotations

import asyncio
import functools

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import Account, User
from fleethub.shared.errors import BadRequest, Conflict
from fleethub.shared.names import normalize_username
from fleethub.shared.security import MIN_PASSWORD_LENGTH, hash_password, verify_password


@functools.cache
def _decoy_hash() -> str:
    # verifying against this costs the same as a real hash, so unknown names take as long as known ones
    return hash_password("not a real password, only here to spend time")


async def ensure_user(session: AsyncSession, name: str, admin: bool | None = None) -> int:
    """The id of user `name`, creating the row if missing; `admin` (if given) is applied."""
    stmt = insert(User).values(name=name, admin=bool(admin))
    if admin is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["name"])
    else:
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"admin": admin})
    await session.execute(stmt)
    return int((await session.execute(select(User.id).where(User.name == name))).scalar_one())


def _check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1000:
        raise BadRequest("password must be at most 1000 characters")


async def set_password(session: AsyncSession, username: str, password: str) -> None:
    """Create or update the password account of `username` (and its user row).

    Raises:
        BadRequest: an invalid user name, or a password too short or too long.
    """
    _check_password_rules(password)
    name = normalize_username(username)
    hashed = await asyncio.to_thread(hash_password, password)
    user_id = await ensure_user(session, name)
    await session.execute(
        insert(Account).values(user_id=user_id, password_hash=hashed)
        .on_conflict_do_update(index_elements=["user_id"], set_={"password_hash": hashed})
    )


async def create_account(session: AsyncSession, username: str, password: str) -> str:
    """Sign-up: a new user and its password account; returns the normalized name.

    An existing user (even one without an account, e.g. created through the API or listed in
    admin_users) can not be claimed this way: that would hand over their servers and rights.

    Raises:
        BadRequest: an invalid user name or password.
        Conflict: the user exists.
    """
    _check_password_rules(password)
    name = normalize_username(username)
    if (await session.execute(select(User.id).where(User.name == name))).first() is not None:
        raise Conflict(f"User {name} already exists")
    hashed = await asyncio.to_thread(hash_password, password)
    user_id = (await session.execute(
        insert(User).values(name=name).on_conflict_do_nothing(index_elements=["name"]).returning(User.id)
    )).scalar()
    if user_id is None:  # lost a race with another sign-up or an API create
        raise Conflict(f"User {name} already exists")
    await session.execute(insert(Account).values(user_id=user_id, password_hash=hashed))
    return name


async def check_password(session: AsyncSession, names: list[str], password: str) -> str | None:
    """The name of the user whose approved account `password` opens, trying `names` in order (the
    normalized form first, then the form an older release may have stored); None if none (timing-safe).

    The account is found through the user row, so it is the account of whoever is called that now. The
    row stays locked against rename and delete (FOR KEY SHARE) until the caller's transaction ends:
    a login that records its session in the same transaction can not land on a user renamed or deleted
    while the password was being checked (it would wait for the rename, or see the new name).
    """
    rows = (await session.execute(
        select(User.name, Account.password_hash, Account.approved)
        .join(Account, Account.user_id == User.id)
        .where(User.name.in_(names))
        .with_for_update(read=True, key_share=True, of=User)
    )).all()
    found = {row[0]: (row[1], bool(row[2])) for row in rows}
    name = next((n for n in names if n in found), None)
    stored, approved = found[name] if name is not None else (_decoy_hash(), False)
    ok = await asyncio.to_thread(verify_password, password, stored)
    return name if ok and approved else None
