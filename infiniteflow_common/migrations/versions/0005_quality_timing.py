"""Quality self-check, output options, memory retries: scores, `completed_with_warnings`, codecs.

A job's status may now be `completed_with_warnings` (23 characters, hence the wider column): the
output exists, but chunks scored below the quality floor. Chunks record their self-check score and
cost and what the worker finally used (scale, batch) after out-of-memory retries. Jobs keep the
user's output options (codec, encoder, crf or bitrate, preset) for the muxer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_STATUSES = "'pending','splitting','interpolating','muxing','completed','failed'"
NEW_STATUSES = "'pending','splitting','interpolating','muxing','completed','completed_with_warnings','failed'"


def upgrade() -> None:
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
    op.alter_column("jobs", "status", type_=sa.String(32), existing_nullable=False)
    op.create_check_constraint("ck_jobs_status", "jobs", f"status in ({NEW_STATUSES})")
    op.add_column("jobs", sa.Column("quality_psnr_db", sa.Float()))
    op.add_column("jobs", sa.Column("quality_ssim", sa.Float()))
    op.add_column("jobs", sa.Column("quality_worst_chunk", sa.Integer()))
    op.add_column("jobs", sa.Column("quality_worst_psnr_db", sa.Float()))
    op.add_column("jobs", sa.Column("quality_low_chunks", postgresql.JSONB()))
    op.add_column("jobs", sa.Column("output_options", postgresql.JSONB()))
    op.add_column("chunks", sa.Column("quality_psnr_db", sa.Float()))
    op.add_column("chunks", sa.Column("quality_ssim", sa.Float()))
    op.add_column("chunks", sa.Column("quality_samples", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("chunks", sa.Column("quality_seconds", sa.Float()))
    op.add_column("chunks", sa.Column("scale", sa.Float()))
    op.add_column("chunks", sa.Column("batch_size", sa.Integer()))
    op.add_column("chunks", sa.Column("oom_retries", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for column in ("oom_retries", "batch_size", "scale", "quality_seconds", "quality_samples",
                   "quality_ssim", "quality_psnr_db"):  # fmt: skip
        op.drop_column("chunks", column)
    for column in ("output_options", "quality_low_chunks", "quality_worst_psnr_db", "quality_worst_chunk", "quality_ssim",
                   "quality_psnr_db"):  # fmt: skip
        op.drop_column("jobs", column)
    # a job completed with warnings did complete: it keeps its output under the old status set
    op.execute("update jobs set status = 'completed' where status = 'completed_with_warnings'")
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
    op.alter_column("jobs", "status", type_=sa.String(16), existing_nullable=False)
    op.create_check_constraint("ck_jobs_status", "jobs", f"status in ({OLD_STATUSES})")
