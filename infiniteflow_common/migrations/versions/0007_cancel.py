"""Cancel: a job may end as `cancelled` (final), with who cancelled it and when.

`cancelled` joins the final statuses in the check constraint; `cancelled_at` records the moment the
row moved there. Downgrading turns cancelled jobs into failed ones with `E_JOB_CANCELLED`, the
closest status the older schema knows (they have no output either).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_STATUSES = "'pending','splitting','interpolating','muxing','completed','completed_with_warnings','failed'"
NEW_STATUSES = "'pending','splitting','interpolating','muxing','completed','completed_with_warnings','failed','cancelled'"


def upgrade() -> None:
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_status", "jobs", f"status in ({NEW_STATUSES})")
    op.add_column("jobs", sa.Column("cancelled_at", sa.DateTime(timezone=True)))
    # The page lists a caller's recent jobs: newest first within a tenant.
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant_id", sa.text("created_at desc")])


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_created", table_name="jobs")
    op.execute(
        "update jobs set status = 'failed', error_code = coalesce(error_code, 'E_JOB_CANCELLED'),"
        " error_message = coalesce(error_message, 'the job was cancelled') where status = 'cancelled'"
    )
    op.drop_column("jobs", "cancelled_at")
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_status", "jobs", f"status in ({OLD_STATUSES})")
