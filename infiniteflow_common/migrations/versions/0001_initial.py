"""Initial state: jobs, chunks, webhook deliveries and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_bucket", sa.Text(), nullable=False),
        sa.Column("source_key", sa.Text(), nullable=False),
        sa.Column("source_etag", sa.Text(), nullable=False),
        sa.Column("source_version", sa.Text()),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("progress", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("params", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("probe", postgresql.JSONB()),
        sa.Column("chunks_total", sa.Integer()),
        sa.Column("chunks_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("output_bucket", sa.Text()),
        sa.Column("output_key", sa.Text()),
        sa.Column("result", postgresql.JSONB()),
        sa.Column("plan", postgresql.JSONB()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("split_at", TS),
        sa.Column("completed_at", TS),
        sa.UniqueConstraint("source_bucket", "source_key", "source_etag", name="uq_jobs_source_object"),
        sa.CheckConstraint(
            "status in ('pending','splitting','interpolating','muxing','completed','failed')",
            name="ck_jobs_status",
        ),
        sa.CheckConstraint("progress between 0 and 100", name="ck_jobs_progress"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "chunks",
        sa.Column("job_id", sa.Uuid(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("chunk_index", sa.Integer(), primary_key=True),
        sa.Column("first_frame", sa.Integer(), nullable=False),
        sa.Column("frame_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("worker", sa.Text()),
        sa.Column("lease_epoch", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("lease_expires_at", TS),
        sa.Column("output_key", sa.Text()),
        sa.Column("frames_out", sa.Integer()),
        sa.Column("interp_seconds", sa.Float()),
        sa.Column("spec", postgresql.JSONB()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.CheckConstraint("status in ('pending','claimed','done','failed')", name="ck_chunks_status"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("webhook_id", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("attempted_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.UniqueConstraint("webhook_id", "attempt", name="uq_webhook_attempt"),
    )
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("event_key", sa.Text(), primary_key=True),
        sa.Column("processed_at", TS, nullable=False, server_default=sa.text("now()")),
    )


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_index("ix_webhook_deliveries_job_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("chunks")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
