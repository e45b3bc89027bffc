"""Password accounts of the `password` authenticator, and the users they log in as."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Account, User
from shared.errors import BadRequest
from shared.names import normalize_username
from shared.security import MIN_PASSWORD_LENGTH, hash_password, verify_password

# verifying against this costs the same as a real hash, so unknown names take as long as known ones
_DUMMY_HASH = hash_password("not a real password, only here to spend time")


async def ensure_user(session: AsyncSession, name: str, admin: bool | None = None) -> int:
    """The id of user `name`, creating the row if missing; `admin` (if given) is applied."""
    stmt = insert(User).values(name=name, admin=bool(admin))
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"admin": bool(admin)}) if admin is not None \
        else stmt.on_conflict_do_nothing(index_elements=["name"])
    await session.execute(stmt)
    return int((await session.execute(select(User.id).where(User.name == name))).scalar_one())


async def set_password(session: AsyncSession, username: str, password: str) -> None:
    """Create or update the password account of `username` (and its user row)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    name = normalize_username(username)
    hashed = await asyncio.to_thread(hash_password, password)
    await session.execute(
        insert(Account).values(username=name, password_hash=hashed)
        .on_conflict_do_update(index_elements=["username"], set_={"password_hash": hashed})
    )
    await ensure_user(session, name)


async def check_password(session: AsyncSession, username: str, password: str) -> bool:
    """Whether `password` is the password of the approved account `username` (timing-safe)."""
    row = (await session.execute(select(Account.password_hash, Account.approved).where(Account.username == username))).first()
    stored, approved = (row[0], row[1]) if row else (_DUMMY_HASH, False)
    ok = await asyncio.to_thread(verify_password, password, stored)
    return ok and approved
