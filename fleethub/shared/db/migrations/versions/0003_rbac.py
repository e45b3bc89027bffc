"""RBAC and the rest of the REST API: groups, roles and their grants, services as token owners,
shares and share codes, server display names, users' auth state.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _fk(table: str, *, nullable: bool = False, index: bool = True) -> sa.Column[int]:
    return sa.Column(f"{table[:-1]}_id", sa.Integer, sa.ForeignKey(f"{table}.id", ondelete="CASCADE"),
                     nullable=nullable, index=index)


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("properties", JSONB, nullable=False, server_default="{}"),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer, sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
    )
    op.create_table(
        "services",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("from_config", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("admin", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("oauth_client_id", sa.String(1024), nullable=True),
        sa.Column("oauth_redirect_uri", sa.Text, nullable=True),
        sa.Column("oauth_no_confirm", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("display", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("info", JSONB, nullable=False, server_default="{}"),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "roles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("scopes", JSONB, nullable=False, server_default="[]"),
        sa.Column("from_config", sa.Boolean, nullable=False, server_default="false"),
    )
    for owner in ("users", "groups", "services"):
        op.create_table(
            f"{owner[:-1]}_roles",
            sa.Column(f"{owner[:-1]}_id", sa.Integer, sa.ForeignKey(f"{owner}.id", ondelete="CASCADE"),
                      primary_key=True),
            sa.Column("role_id", sa.Integer, sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True,
                      index=True),
        )
    # a token belongs to a user or to a service
    op.alter_column("api_tokens", "user_id", nullable=True)
    op.add_column("api_tokens", _fk("services", nullable=True))
    op.create_check_constraint("ck_api_tokens_one_owner", "api_tokens", "(user_id IS NULL) <> (service_id IS NULL)")
    op.create_table(
        "shares",
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("servers"),
        _fk("users", nullable=True),
        _fk("groups", nullable=True),
        sa.Column("scopes", JSONB, nullable=False, server_default="[]"),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("server_id", "user_id"),
        sa.UniqueConstraint("server_id", "group_id"),
        sa.CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="ck_shares_one_grantee"),
    )
    op.create_table(
        "share_codes",
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("servers"),
        sa.Column("hashed", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", JSONB, nullable=False, server_default="[]"),
        sa.Column("created", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TZ, nullable=False, index=True),
        sa.Column("exchange_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_exchanged_at", TZ, nullable=True),
    )
    op.add_column("servers", sa.Column("display_name", sa.String(255), nullable=True))
    op.add_column("users", sa.Column("auth_state", JSONB, nullable=True))
    # spawn and active-server limits count across replicas: index the rows they count
    op.create_index("ix_servers_desired", "servers", ["desired"])
    # GET /users?sort=last_activity pages through an index, as sort=id and sort=name do
    op.create_index("ix_users_last_activity", "users", ["last_activity"])


def downgrade() -> None:
    op.drop_index("ix_users_last_activity", "users")
    op.drop_index("ix_servers_desired", "servers")
    op.drop_column("users", "auth_state")
    op.drop_column("servers", "display_name")
    op.drop_table("share_codes")
    op.drop_table("shares")
    op.execute("DELETE FROM api_tokens WHERE service_id IS NOT NULL")
    op.drop_constraint("ck_api_tokens_one_owner", "api_tokens")
    op.drop_column("api_tokens", "service_id")
    op.alter_column("api_tokens", "user_id", nullable=False)
    for table in ("service_roles", "group_roles", "user_roles", "roles", "services", "group_members", "groups"):
        op.drop_table(table)
