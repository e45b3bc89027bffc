"""When each user's authentication was last checked: `users.auth_refreshed`, set at login and at every
`refresh_user` (before a spawn, and by the auth service's background refresh every `auth.auth_refresh_age`).

Rows written before this revision have none: a user with auth_state and a live login session is refreshed
at the first background pass.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("auth_refreshed", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "auth_refreshed")
