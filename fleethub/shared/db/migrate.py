"""Applying and checking the schema version; generating the hub's secret key."""

from __future__ import annotations

import secrets
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from fleethub.shared.db.locks import AdvisoryLock, xact_lock
from fleethub.shared.db.models import HubSecret
from fleethub.shared.errors import NotMigrated

_MIGRATIONS = Path(__file__).parent / "migrations"
SECRET_KEY_NAME = "secret_key"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(connection: Connection) -> None:
    from alembic import command

    cfg = _config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to head and make sure a hub secret key exists. Safe to run concurrently."""
    async with engine.begin() as conn:
        # serialise concurrent `fleethub migrate` runs (compose may start several)
        await xact_lock(conn, AdvisoryLock.MIGRATE)
        await conn.run_sync(_upgrade)
        await conn.execute(
            insert(HubSecret)
            .values(key=SECRET_KEY_NAME, value=secrets.token_urlsafe(48))
            .on_conflict_do_nothing(index_elements=["key"])
        )


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema version the database is at (None if never migrated)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Refuse to run against a database not at this code's schema version.

    Raises:
        NotMigrated: with a message telling the operator to run `fleethub migrate`.
    """
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        raise NotMigrated(
            f"database schema is at {current or 'nothing'}, this fleethub needs {head}: run `fleethub migrate`"
        )


async def load_secret_key(engine: AsyncEngine) -> str:
    """The generated hub secret key.

    Raises:
        NotMigrated: no key exists yet.
    """
    async with engine.connect() as conn:
        value = (await conn.execute(select(HubSecret.value).where(HubSecret.key == SECRET_KEY_NAME))).scalar()
    if value is None:
        raise NotMigrated("the hub secret key is missing: run `fleethub migrate`")
    return value
