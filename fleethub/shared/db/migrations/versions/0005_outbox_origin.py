"""The outbox row's origin: the service whose relay publishes it. Each service's NATS identity may
publish only its own subjects, and a relay claims only its own service's rows. Rows still unpublished
get the service that writes such rows today, by subject.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# by the subject's tail after `<ns>.`: commands come from the api (the culler's stops as well: the api
# may publish those too), server events from the spawner, login events from auth, the rest from the api
ORIGIN_BY_SUBJECT = """
CASE
  WHEN split_part(subject, '.', 2) = 'cmd' THEN 'api'
  WHEN split_part(subject, '.', 3) = 'server' THEN 'spawner'
  WHEN split_part(subject, '.', 3) = 'user' AND split_part(subject, '.', 4) IN ('logged_in', 'logged_out')
    THEN 'auth'
  WHEN split_part(subject, '.', 3) = 'activity' THEN 'proxy'
  ELSE 'api'
END
"""


def upgrade() -> None:
    op.add_column("outbox", sa.Column("origin", sa.String(16), nullable=True))
    op.execute(f"UPDATE outbox SET origin = {ORIGIN_BY_SUBJECT}")
    op.alter_column("outbox", "origin", nullable=False)
    op.drop_index("ix_outbox_unpublished", "outbox")
    op.create_index("ix_outbox_unpublished", "outbox", ["origin", "id"],
                    postgresql_where=sa.text("published_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_outbox_unpublished", "outbox")
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL"))
    op.drop_column("outbox", "origin")
