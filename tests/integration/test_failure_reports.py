"""A job's failure is announced once per cause, and never back to the service that consumes the news."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.db import Job, transaction
from infiniteflow_common.events import Event
from infiniteflow_common.failures import report_failure

pytestmark = [pytest.mark.postgres]


async def test_a_notifier_that_gives_up_on_a_failed_jobs_announcement_does_not_announce_it_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The job failed with E_INTERNAL; the notifier then hit an unexpected error on that very job.failed
    # and dead-lettered it as E_INTERNAL too. Announcing again would feed it the same record for ever.
    job_id = uuid.uuid4()
    async with transaction(sessions) as session:
        session.add(Job(id=job_id, source="bucket", source_bucket="incoming", source_key=f"t/{job_id}",
                        source_etag="e", status="failed", error_code="E_INTERNAL", params={}))  # fmt: skip
    published: list[tuple[str, Event]] = []

    async def publish(topic: str, event: Event, **_: object) -> None:
        published.append((topic, event))

    try:
        for stage in ("notifier", "muxer"):
            await report_failure(
                sessions, publish, job_id=job_id, stage=stage, code="E_INTERNAL", message="an internal error"
            )
    finally:
        async with transaction(sessions) as session:
            await session.execute(text("delete from jobs where id = :id"), {"id": job_id})
    assert [topic for topic, _ in published] == ["job.failed"], "a pipeline stage's replay still re-announces"
