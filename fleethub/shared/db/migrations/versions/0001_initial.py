"""The initial schema: users, accounts, sessions, tokens, servers, server states, outbox, secrets.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("admin", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("last_activity", TZ, nullable=True),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(255), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("approved", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("hashed", sa.String(64), nullable=False, unique=True),
        sa.Column("session_id", sa.String(64), nullable=False, index=True),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TZ, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("hashed", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False, server_default="api"),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("scopes", JSONB, nullable=False, server_default="[]"),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("spawn_id", sa.String(64), nullable=True, index=True),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TZ, nullable=True),
        sa.Column("last_activity", TZ, nullable=True),
    )
    op.create_table(
        "servers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("desired", sa.String(16), nullable=False, server_default="stopped"),
        sa.Column("spawn_id", sa.String(64), nullable=True, unique=True),
        sa.Column("user_options", JSONB, nullable=False, server_default="{}"),
        sa.Column("requested_at", TZ, nullable=True),
        sa.Column("last_activity", TZ, nullable=True),
        sa.UniqueConstraint("user_id", "name"),
    )
    op.create_table(
        "server_states",
        sa.Column("user_name", sa.String(255), primary_key=True),
        sa.Column("server_name", sa.String(255), primary_key=True),
        sa.Column("spawn_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("state", JSONB, nullable=False, server_default="{}"),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("lease_expires", TZ, nullable=True),
        sa.Column("started", TZ, nullable=True),
        sa.Column("stopped", TZ, nullable=True),
        sa.Column("updated", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_server_states_lease", "server_states", ["status", "lease_expires"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("msg_id", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", TZ, nullable=True),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL"))
    op.create_table(
        "hub_secrets",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("hub_secrets", "outbox", "server_states", "servers", "api_tokens", "sessions", "accounts", "users"):
        op.drop_table(table)
