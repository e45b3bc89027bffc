"""OAuth2 provider: authorization codes, and the OAuth client a token was issued to.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth_codes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("hashed", sa.String(64), nullable=False, unique=True),
        sa.Column("client_id", sa.String(1024), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("scopes", JSONB, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("code_challenge", sa.String(128), nullable=True),
        sa.Column("expires_at", TZ, nullable=False, index=True),
    )
    op.add_column("api_tokens", sa.Column("client_id", sa.String(1024), nullable=True))


def downgrade() -> None:
    op.drop_column("api_tokens", "client_id")
    op.drop_table("oauth_codes")
