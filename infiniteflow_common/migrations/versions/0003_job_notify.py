"""Job events: every change of a job's status or progress is announced with PostgreSQL NOTIFY.

The API streams them to users (server-sent events) from one LISTEN connection, so following a job
costs no database polling. The notification is sent at commit, carries the job's id, status, progress
and chunk counts (well under NOTIFY's 8000-byte limit), and only when one of them changed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHANNEL = "job_events"


def upgrade() -> None:
    op.execute(
        f"""
        create function infiniteflow_job_notify() returns trigger language plpgsql as $$
        begin
          if tg_op = 'UPDATE'
             and new.status is not distinct from old.status
             and new.progress is not distinct from old.progress
             and new.chunks_done is not distinct from old.chunks_done
             and new.chunks_total is not distinct from old.chunks_total then
            return null;
          end if;
          perform pg_notify('{CHANNEL}', json_build_object(
            'job_id', new.id,
            'status', new.status,
            'progress', new.progress,
            'chunks_done', new.chunks_done,
            'chunks_total', new.chunks_total,
            'error_code', new.error_code
          )::text);
          return null;
        end
        $$
        """
    )
    op.execute(
        "create trigger jobs_notify after insert or update on jobs "
        "for each row execute function infiniteflow_job_notify()"
    )


def downgrade() -> None:
    op.execute("drop trigger if exists jobs_notify on jobs")
    op.execute("drop function if exists infiniteflow_job_notify()")
