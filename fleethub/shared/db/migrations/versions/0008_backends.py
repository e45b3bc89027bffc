"""The backend of each spawn: `servers.backend` (chosen by the start's profile) and `server_states.backend`
(recorded by the worker that claims the spawn), so commands and adoption go to the workers of that backend.

Rows written before this revision ran on the only backend there was, `local`.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("servers", sa.Column("backend", sa.String(255), nullable=False, server_default=""))
    op.add_column("server_states", sa.Column("backend", sa.String(255), nullable=False, server_default=""))
    op.execute("UPDATE servers SET backend = 'local' WHERE spawn_id IS NOT NULL")
    op.execute("UPDATE server_states SET backend = 'local'")


def downgrade() -> None:
    op.drop_column("server_states", "backend")
    op.drop_column("servers", "backend")
