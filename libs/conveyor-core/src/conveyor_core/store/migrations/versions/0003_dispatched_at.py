"""Record when a job's message was confirmed, so undispatched rows can be repaired.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    # Jobs from before this column existed were dispatched: do not publish them again.
    op.execute("UPDATE jobs SET dispatched_at = created_at")
    op.create_index("ix_jobs_state_dispatched", "jobs", ["state", "dispatched_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_dispatched", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dispatched_at")
