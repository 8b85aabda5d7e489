"""Splits as leased background work: the request, its holder, until when, and how often it started.

The splitter records a `video.uploaded` as a split request on the job and commits the record at
once; its planners take requests from the table under a renewable lease (`infiniteflow_common.splits`),
so a long pass never holds a Kafka consumer, several run side by side, and a planner that dies
leaves a lease that runs out: another takes the job over, once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("split_request", postgresql.JSONB(), nullable=True))
    op.add_column("jobs", sa.Column("split_owner", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("split_lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("split_tries", sa.SmallInteger(), nullable=False, server_default="0"))
    op.create_index(
        "ix_jobs_split_requests",
        "jobs",
        ["priority", "created_at"],
        postgresql_where=sa.text("split_request is not null and split_at is null"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_split_requests", table_name="jobs")
    op.drop_column("jobs", "split_tries")
    op.drop_column("jobs", "split_lease_expires_at")
    op.drop_column("jobs", "split_owner")
    op.drop_column("jobs", "split_request")
