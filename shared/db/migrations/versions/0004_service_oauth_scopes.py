"""Runtime services as OAuth clients: the scopes their clients' tokens may carry beyond the defaults.

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


def downgrade() -> None:
    op.drop_column("services", "oauth_client_allowed_scopes")
