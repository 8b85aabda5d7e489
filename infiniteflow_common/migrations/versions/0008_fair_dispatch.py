"""Fair dispatch: a priority per job, a weight per tenant, and an index for the workers' claim query.

`jobs.priority` (−50…50, default 0) orders a tenant's own jobs; `tenants.weight` (> 0, default 1) is
the tenant's share of the fleet against the others'. Workers pick the next chunk across every running
job (`infiniteflow_common.dispatch`); the partial index keeps that query on the chunks still to do.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("priority", sa.SmallInteger(), nullable=False, server_default="0"))
    op.create_check_constraint("ck_jobs_priority", "jobs", "priority between -50 and 50")
    op.add_column("tenants", sa.Column("weight", sa.Float(), nullable=False, server_default="1"))
    op.create_check_constraint("ck_tenants_weight", "tenants", "weight > 0")
    op.create_index(
        "ix_chunks_to_do",
        "chunks",
        ["job_id", "chunk_index"],
        postgresql_where=sa.text("status in ('pending', 'claimed')"),
    )


def downgrade() -> None:
    op.drop_index("ix_chunks_to_do", table_name="chunks")
    op.drop_constraint("ck_tenants_weight", "tenants", type_="check")
    op.drop_column("tenants", "weight")
    op.drop_constraint("ck_jobs_priority", "jobs", type_="check")
    op.drop_column("jobs", "priority")
