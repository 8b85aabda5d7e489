"""Webhooks: one row per webhook message, the notifier's durable delivery queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("webhook_id", sa.Text(), primary_key=True),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.Text()),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("origin_topic", sa.Text(), nullable=False),
        sa.Column("origin_partition", sa.Integer(), nullable=False),
        sa.Column("origin_offset", sa.BigInteger(), nullable=False),
        sa.Column("origin_key", sa.LargeBinary()),
        sa.Column("origin_payload", sa.LargeBinary(), nullable=False),
        sa.Column("origin_headers", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("origin_timestamp_ms", sa.BigInteger()),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("error_code", sa.String(64)),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("delivered_at", TS),
        sa.Column("dead_lettered_at", TS),
        sa.CheckConstraint(
            "status in ('pending','delivered','exhausted','skipped')", name="ck_webhooks_status"
        ),
        sa.CheckConstraint("status <> 'pending' or url is not null", name="ck_webhooks_pending_has_url"),
        sa.CheckConstraint("attempts >= 0", name="ck_webhooks_attempts"),
    )
    op.create_index("ix_webhooks_job_id", "webhooks", ["job_id"])
    # The delivery loop's two queries: due pending rows, and exhausted rows awaiting their dead letter.
    op.create_index(
        "ix_webhooks_due",
        "webhooks",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhooks_dead_letter_outbox",
        "webhooks",
        ["created_at"],
        postgresql_where=sa.text("status = 'exhausted' and dead_lettered_at is null"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhooks_dead_letter_outbox", table_name="webhooks")
    op.drop_index("ix_webhooks_due", table_name="webhooks")
    op.drop_index("ix_webhooks_job_id", table_name="webhooks")
    op.drop_table("webhooks")
