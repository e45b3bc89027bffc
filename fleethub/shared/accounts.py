"""Password accounts of the `password` authenticator, and the users they log in as.

Shared because more than the auth service writes or checks them: the api sets passwords and approves
sign-ups, `fleethub passwd` and `fleethub up` set them, and the api checks passwords through the
authenticator (`shared/authenticators/local.py`). Every new password passes `shared/passwords.py`'s rules.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.authenticator_settings import PasswordSettings
from fleethub.shared.db.models import Account, User
from fleethub.shared.errors import Conflict
from fleethub.shared.names import normalize_username
from fleethub.shared.passwords import check_password_rules
from fleethub.shared.security import hash_password, verify_password


@dataclass(frozen=True)
class Checked:
    """A password that was right: whose account it opened, and whether an admin approved the account yet."""

    name: str
    approved: bool


@dataclass(frozen=True)
class Pending:
    """A sign-up waiting for an admin's approval."""

    name: str
    created: datetime


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


async def _hashed(password: str, name: str, rules: PasswordSettings | None) -> str:
    check_password_rules(password, name, rules or PasswordSettings())
    return await asyncio.to_thread(hash_password, password)


async def set_password(session: AsyncSession, username: str, password: str, *, rules: PasswordSettings | None = None,
                       admin: bool | None = None) -> int:
    """Create or update the password account of `username` (and its user row, `admin` applied if given);
    returns the user's id. A new account is approved; an existing one keeps its approval state.

    Raises:
        BadRequest: an invalid user name, or a password that breaks `rules` (default: the default rules).
    """
    name = normalize_username(username)
    hashed = await _hashed(password, name, rules)
    user_id = await ensure_user(session, name, admin)
    await session.execute(
        insert(Account).values(user_id=user_id, password_hash=hashed)
        .on_conflict_do_update(index_elements=["user_id"], set_={"password_hash": hashed})
    )
    return user_id


async def set_password_of(session: AsyncSession, user_id: int, name: str, password: str,
                          rules: PasswordSettings) -> None:
    """Create or update the password account of the existing user `user_id` (called `name`).

    Raises:
        BadRequest: the password breaks `rules`.
    """
    hashed = await _hashed(password, name, rules)
    await session.execute(
        insert(Account).values(user_id=user_id, password_hash=hashed)
        .on_conflict_do_update(index_elements=["user_id"], set_={"password_hash": hashed})
    )


async def create_account(session: AsyncSession, username: str, password: str, *,
                         rules: PasswordSettings | None = None, approved: bool = True) -> str:
    """Sign-up: a new user and its password account (`approved`: usable at once, else it waits for an admin);
    returns the normalized name.

    An existing user (even one without an account, e.g. created through the API or listed in
    admin_users) can not be claimed this way: that would hand over their servers and rights.

    Raises:
        BadRequest: an invalid user name, or a password that breaks `rules`.
        Conflict: the user exists.
    """
    name = normalize_username(username)
    if (await session.execute(select(User.id).where(User.name == name))).first() is not None:
        raise Conflict(f"User {name} already exists")
    hashed = await _hashed(password, name, rules)
    user_id = (await session.execute(
        insert(User).values(name=name).on_conflict_do_nothing(index_elements=["name"]).returning(User.id)
    )).scalar()
    if user_id is None:  # lost a race with another sign-up or an API create
        raise Conflict(f"User {name} already exists")
    await session.execute(insert(Account).values(user_id=user_id, password_hash=hashed, approved=approved))
    return name


async def create_missing_accounts(session: AsyncSession, names: list[str], password: str,
                                  rules: PasswordSettings) -> list[str]:
    """The initial-password file: an approved account with `password` for each of `names` (admins) that has
    none, its user row created (admin) if missing; an existing account is never touched. Returns the names
    given an account.

    Raises:
        BadRequest: the password breaks `rules` (for one of the names).
    """
    created = []
    for name in names:
        has = (await session.execute(
            select(Account.id).join(User, User.id == Account.user_id).where(User.name == name))).first()
        if has is not None:
            continue
        hashed = await _hashed(password, name, rules)
        user_id = await ensure_user(session, name, admin=True)
        done = (await session.execute(
            insert(Account).values(user_id=user_id, password_hash=hashed)
            .on_conflict_do_nothing(index_elements=["user_id"]).returning(Account.id)  # another replica was first
        )).scalar()
        if done is not None:
            created.append(name)
    return created


async def password_is(session: AsyncSession, user_id: int, password: str) -> bool:
    """Whether `password` opens the account of user `user_id` (timing-safe; False without an account)."""
    stored = (await session.execute(select(Account.password_hash).where(Account.user_id == user_id))).scalar()
    ok = await asyncio.to_thread(verify_password, password, stored or _decoy_hash())
    return ok and stored is not None


async def pending_signups(session: AsyncSession) -> list[Pending]:
    """Accounts waiting for approval, oldest first."""
    rows = (await session.execute(
        select(User.name, Account.created).join(Account, Account.user_id == User.id)
        .where(Account.approved.is_(False)).order_by(Account.created, User.name)
    )).all()
    return [Pending(str(name), created) for name, created in rows]


async def is_pending(session: AsyncSession, user_id: int) -> bool:
    """Whether the account of user `user_id` waits for approval (the account row stays locked until the
    transaction ends: an approval and a rejection of the same sign-up go one after the other)."""
    return (await session.execute(
        select(Account.id).where(Account.user_id == user_id, Account.approved.is_(False)).with_for_update()
    )).first() is not None


async def approve(session: AsyncSession, user_id: int) -> None:
    """Approve the account of user `user_id`: its password logs in from now on."""
    await session.execute(update(Account).where(Account.user_id == user_id).values(approved=True))


async def check_password(session: AsyncSession, names: list[str], password: str) -> Checked | None:
    """Whose account `password` opens, trying `names` in order (the normalized form first, then the form an
    older release may have stored), and whether it is approved; None if none (timing-safe).

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
    return Checked(name, approved) if ok and name is not None else None
