"""Revision 0006 on a database holding data: accounts move from names to user ids (a deleted user's stale
account is dropped), and the downgrade gives the names back."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from fleethub.shared.db.engine import make_engine
from fleethub.shared.db.migrate import _config

pytestmark = pytest.mark.integration


def _to(revision: str, *, down: bool = False) -> object:
    def run(connection: Connection) -> None:
        cfg = _config()
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)

    return run


async def test_accounts_follow_user_ids_through_the_upgrade_and_back(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to("0005"))
            await conn.execute(text("INSERT INTO users (name) VALUES ('frank'), ('vic'), ('nopass')"))
            # 'carol2' is the review's stale account: its user was deleted, the account stayed
            await conn.execute(text("INSERT INTO accounts (username, password_hash) VALUES "
                                    "('frank', 'h-frank'), ('vic', 'h-vic'), ('carol2', 'h-attacker')"))
        async with engine.begin() as conn:
            await conn.run_sync(_to("head"))
            rows = (await conn.execute(text(
                "SELECT users.name, accounts.password_hash FROM accounts JOIN users ON users.id = accounts.user_id "
                "ORDER BY users.name"))).all()
            assert [tuple(r) for r in rows] == [("frank", "h-frank"), ("vic", "h-vic")]
            assert (await conn.execute(text("SELECT count(*) FROM accounts"))).scalar_one() == 2
            await conn.execute(text("DELETE FROM users WHERE name = 'vic'"))  # ON DELETE CASCADE
            assert (await conn.execute(text("SELECT count(*) FROM accounts"))).scalar_one() == 1
        async with engine.begin() as conn:
            await conn.run_sync(_to("0005", down=True))
            rows = (await conn.execute(text("SELECT username, password_hash FROM accounts"))).all()
            assert [tuple(r) for r in rows] == [("frank", "h-frank")]
            await conn.run_sync(_to("head"))  # and up again
    finally:
        await engine.dispose()
