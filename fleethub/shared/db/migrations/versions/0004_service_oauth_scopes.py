"""Runtime services as OAuth clients: the scopes their clients' tokens may carry beyond the defaults.
The users' last_activity index in the order `GET /users?sort=last_activity` reads it (never-active
users first; descending reads it backwards, never-active users last), so pages need no sort.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("services", sa.Column("oauth_client_allowed_scopes", JSONB, nullable=False,
                                        server_default=sa.text("'[]'::jsonb")))
    op.drop_index("ix_users_last_activity", "users")
    op.create_index("ix_users_last_activity", "users", [sa.text("last_activity ASC NULLS FIRST"), "id"])


def downgrade() -> None:
    op.drop_index("ix_users_last_activity", "users")
    op.create_index("ix_users_last_activity", "users", ["last_activity"])
    op.drop_column("services", "oauth_client_allowed_scopes")
