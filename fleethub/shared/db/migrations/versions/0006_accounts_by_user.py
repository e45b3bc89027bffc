"""Password accounts belong to their user's id (ON DELETE CASCADE): a rename carries the account, a
delete removes it. Accounts whose user is gone (deleted before this revision) are deleted: they could
only give a new user of that name to whoever knew the old password. Also the login throttle's table.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("accounts", sa.Column("user_id", sa.Integer, nullable=True))
    op.execute("UPDATE accounts SET user_id = users.id FROM users WHERE users.name = accounts.username")
    op.execute("DELETE FROM accounts WHERE user_id IS NULL")
    op.alter_column("accounts", "user_id", nullable=False)
    op.create_foreign_key("accounts_user_id_fkey", "accounts", "users", ["user_id"], ["id"], ondelete="CASCADE")
    op.create_unique_constraint("accounts_user_id_key", "accounts", ["user_id"])
    op.drop_column("accounts", "username")  # its unique constraint goes with it
    op.create_table(
        "login_throttle",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_attempt", TZ, nullable=False, server_default=sa.func.now(), index=True),
        sa.Column("blocked_until", TZ, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
    op.add_column("accounts", sa.Column("username", sa.String(255), nullable=True))
    op.execute("UPDATE accounts SET username = users.name FROM users WHERE users.id = accounts.user_id")
    op.alter_column("accounts", "username", nullable=False)
    op.create_unique_constraint("accounts_username_key", "accounts", ["username"])
    op.drop_constraint("accounts_user_id_key", "accounts", type_="unique")
    op.drop_constraint("accounts_user_id_fkey", "accounts", type_="foreignkey")
    op.drop_column("accounts", "user_id")
