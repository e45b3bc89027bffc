"""API tokens of users: creating (only the hash is stored), listing and revoking."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleethub.shared.db.models import ApiToken, User
from fleethub.shared.errors import NotFound
from fleethub.shared.events import TokenRevoked, utcnow
from fleethub.shared.outbox import enqueue
from fleethub.shared.security import hash_token, new_token


@dataclass(frozen=True)
class NewToken:
    """A created token: its row and the plaintext, shown once."""

    row: ApiToken
    token: str


async def create_token(session: AsyncSession, user: User, *, note: str, scopes: list[str],
                       expires_in: int | None) -> NewToken:
    """A new API token of `user` (`expires_in` None or 0: never expires)."""
    token = new_token()
    row = ApiToken(
        user_id=user.id, hashed=hash_token(token), kind="api", note=note, scopes=scopes,
        expires_at=utcnow() + timedelta(seconds=expires_in) if expires_in else None,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return NewToken(row, token)


def _live(user: User) -> list[ColumnElement[bool]]:
    return [ApiToken.user_id == user.id, or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > utcnow())]


async def list_tokens(session: AsyncSession, user: User) -> list[ApiToken]:
    """The user's unexpired tokens, least recently used first (as JupyterHub orders them)."""
    rows = (await session.execute(select(ApiToken).where(*_live(user)))).scalars().all()
    return sorted(rows, key=lambda t: (t.last_activity or t.created, t.id))


def parse_token_id(token_id: str) -> int | None:
    """`a17` → 17; anything else → None."""
    digits = token_id[1:] if token_id.startswith("a") else ""
    return int(digits) if digits.isdigit() and len(digits) < 12 else None


async def get_token(session: AsyncSession, user: User, token_id: str) -> ApiToken:
    """One unexpired token of `user` by its API id.

    Raises:
        NotFound: malformed id, another user's token, or no such token.
    """
    tid = parse_token_id(token_id)
    row = None
    if tid is not None:
        row = (await session.execute(select(ApiToken).where(ApiToken.id == tid, *_live(user)))).scalar()
    if row is None:
        raise NotFound(f"No such token: {token_id[:40]}")
    return row


async def revoke_token(session: AsyncSession, namespace: str, user: User, token_id: str) -> list[str]:
    """Delete a token and announce it; returns the hashes deleted (for dropping them from caches).

    An OAuth token takes with it every token of the user issued to the same client, as JupyterHub does.

    Raises:
        NotFound: as `get_token`.
    """
    row = await get_token(session, user, token_id)
    which = ApiToken.id == row.id
    if row.kind == "oauth" and row.client_id:
        which = or_(which, and_(ApiToken.user_id == user.id, ApiToken.kind == "oauth",
                                ApiToken.client_id == row.client_id))
    gone = (await session.execute(delete(ApiToken).where(which).returning(ApiToken.id, ApiToken.hashed))).all()
    for tid, _ in gone:
        enqueue(session, TokenRevoked(token_id=tid, user=user.name), namespace, origin="api")
    return [hashed for _, hashed in gone]
