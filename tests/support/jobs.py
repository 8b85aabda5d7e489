"""Job rows as the tests read them: one row, or the row once the job is final."""

from __future__ import annotations

from typing import Any

import asyncpg

from infiniteflow_common.settings import CommonSettings
from tests.support.waiting import eventually

FINAL = ("completed", "completed_with_warnings", "failed", "cancelled")


async def connect(settings: CommonSettings) -> Any:
    """A plain asyncpg connection to the stack's database (the caller closes it)."""
    return await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))


async def job_row(
    settings: CommonSettings, *, key: str | None = None, job_id: str | None = None
) -> dict[str, Any] | None:
    """The job for a source key (or id), as a dict."""
    connection = await connect(settings)
    try:
        if job_id:
            row = await connection.fetchrow("select * from jobs where id = $1::uuid", job_id)
        else:
            row = await connection.fetchrow("select * from jobs where source_key = $1", key)
        return dict(row) if row else None
    finally:
        await connection.close()


async def wait_for_job(
    settings: CommonSettings, *, key: str | None = None, job_id: str | None = None, timeout_s: float = 240
) -> dict[str, Any]:
    """Poll until the job is final; fail with its state when the deadline passes."""
    row: dict[str, Any] | None = await eventually(
        lambda: job_row(settings, key=key, job_id=job_id),
        timeout_s,
        "the job to be final",
        until=lambda row: row is not None and row["status"] in FINAL,
        interval_s=0.5,
    )
    assert row is not None
    return row
