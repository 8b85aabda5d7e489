"""Tenants: API keys (stored hashed), per-tenant rate windows and bucket prefixes; disabled webhook URLs.

A tenant owns the jobs it starts, through the API (its key) or by dropping a file under its bucket
prefix. Rate limiting counts requests per tenant in fixed one-minute windows in PostgreSQL, so every
ingest replica enforces the same limit. A webhook endpoint that answered 410 Gone is disabled.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("bucket_prefix", sa.Text(), nullable=False, unique=True),
        sa.Column("rate_limit_per_minute", sa.Integer()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("id ~ '^[a-z0-9][a-z0-9-]{0,62}$'", name="ck_tenants_id_slug"),
        sa.CheckConstraint("bucket_prefix ~ '^[a-z0-9][a-z0-9/_-]*/$'", name="ck_tenants_prefix"),
        sa.CheckConstraint("rate_limit_per_minute is null or rate_limit_per_minute > 0", name="ck_rate"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column(
            "tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.Text()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("last_used_at", TS),
        sa.Column("revoked_at", TS),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id"])
    op.create_table(
        "rate_windows",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("window_start", TS, primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False),
    )
    op.add_column(
        "jobs",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="SET NULL")),
    )
    op.create_index("ix_jobs_tenant", "jobs", ["tenant_id", "created_at"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("url", sa.Text(), primary_key=True),
        sa.Column("disabled_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Uuid()),
    )


def downgrade() -> None:
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_jobs_tenant", table_name="jobs")
    op.drop_column("jobs", "tenant_id")
    op.drop_table("rate_windows")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
