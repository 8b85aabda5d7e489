"""Data path: workers encode their chunks, one muxer assembles a job under a lease, stage timings.

Chunks record the size of their encoded output, which model interpolated them (and the candidates'
self-check scores when the model was chosen per chunk). Jobs record when splitting and assembly
started (stage wall times for the status API) and which muxer holds the job's assembly lease, so two
muxer replicas never assemble one job at once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("encoded_bytes", sa.BigInteger()))
    op.add_column("chunks", sa.Column("model", sa.String(32)))
    op.add_column("chunks", sa.Column("model_scores", postgresql.JSONB()))
    op.add_column("jobs", sa.Column("split_started_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("mux_started_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("mux_owner", sa.Text()))
    op.add_column("jobs", sa.Column("mux_lease_expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    for column in ("mux_lease_expires_at", "mux_owner", "mux_started_at", "split_started_at"):
        op.drop_column("jobs", column)
    for column in ("model_scores", "model", "encoded_bytes"):
        op.drop_column("chunks", column)
