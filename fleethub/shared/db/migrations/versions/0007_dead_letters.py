"""Dead letters: messages a consumer gave up on (malformed, or a handler that failed every time), with why.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("num_delivered", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(), index=True),
        # a message given up twice (its TERM lost, then redelivered) is one dead letter
        sa.UniqueConstraint("stream", "stream_seq", "consumer", name="uq_dead_letters_message"),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
