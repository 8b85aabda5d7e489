"""Queued jobs learn their place and an estimated start from the jobs and chunks in PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.db import Chunk, Tenant, transaction, utcnow
from infiniteflow_common.queue import read_loads
from services.ingest.pipeline_gauges import PipelineMonitor
from tests.support.queues import QueueOfThree, queued_job

pytestmark = [pytest.mark.postgres]

RATES = {"flow": 2.0}
"""Megapixels per second: a 1080p ×2 chunk of 100 frames is about 100 s of work."""


async def test_two_queued_jobs_behind_a_running_one_are_next_in_priority_order_and_start_later(
    sessions: async_sessionmaker[AsyncSession], queue_of_three: QueueOfThree
) -> None:
    async with sessions() as session:
        snapshot = await read_loads(session, RATES)
    places = snapshot.standings()

    assert queue_of_three.running not in places, "a job with a chunk started is not queued"
    high, low = places[queue_of_three.high], places[queue_of_three.low]
    assert (high.position, high.jobs_ahead) == (1, 0)
    assert (low.position, low.jobs_ahead) == (2, 1)
    assert high.wait_s > 0, "the only worker is busy with the running job's chunk"
    assert low.wait_s > high.wait_s


async def test_the_loads_count_waiting_and_running_chunks_and_their_work(
    sessions: async_sessionmaker[AsyncSession], queue_of_three: QueueOfThree
) -> None:
    async with sessions() as session:
        snapshot = await read_loads(session, RATES)
    loads = {job.job_id: job for job in snapshot.jobs}

    running, high = loads[queue_of_three.running], loads[queue_of_three.high]
    assert (running.started, running.waiting, len(running.running_left_s)) == (True, 1, 1)
    assert (high.started, high.waiting, high.running_left_s) == (False, 2, ())
    assert high.tenant is None
    # 1920×1080 × 100 frames, one interpolated frame each, at the measured or the configured rate
    work_mpix = 1920 * 1080 * 100 / 1e6
    assert high.waiting_s == pytest.approx(2 * work_mpix / snapshot.rates["flow"])


def _gauges(tenant: str) -> tuple[float | None, ...]:
    names = ("queued_chunks", "running_chunks", "queued_work_seconds")
    return tuple(REGISTRY.get_sample_value(f"infiniteflow_tenant_{n}", {"tenant": tenant}) for n in names)


async def test_the_monitor_exports_each_tenants_waiting_and_running_chunks_and_drops_a_deleted_tenant(
    sessions: async_sessionmaker[AsyncSession], unique: str
) -> None:
    tenant, job_id = f"queue-{unique}", uuid.uuid4()
    now = utcnow()
    async with transaction(sessions) as session:
        session.add(Tenant(id=tenant, name=tenant, bucket_prefix=f"tenants/{tenant}/", weight=2.0))
        await session.flush()
        session.add(queued_job(job_id, priority=0, age_s=5, tenant=tenant))
        await session.flush()
        session.add(
            Chunk(
                job_id=job_id,
                chunk_index=0,
                first_frame=0,
                frame_count=100,
                status="claimed",
                worker="w",
                lease_epoch=1,
                started_at=now,
                lease_expires_at=now + timedelta(minutes=5),
            )
        )
        for index in (1, 2):
            session.add(Chunk(job_id=job_id, chunk_index=index, first_frame=index * 100, frame_count=100))
    monitor = PipelineMonitor(sessions=sessions, kafka_bootstrap="unused", engine_mpix_per_s=RATES)
    try:
        await monitor.refresh_queues()
        waiting, running, work_s = _gauges(tenant)
        assert (waiting, running) == (2, 1)
        assert work_s is not None
        assert work_s > 0

        async with transaction(sessions) as session:
            await session.execute(text("delete from jobs where id = :id"), {"id": job_id})
        await monitor.refresh_queues()
        assert _gauges(tenant) == (0, 0, 0), "a tenant without work stays on the dashboard at zero"
    finally:
        async with transaction(sessions) as session:
            await session.execute(text("delete from jobs where id = :id"), {"id": job_id})
            await session.execute(text("delete from tenants where id = :id"), {"id": tenant})
    await monitor.refresh_queues()
    assert _gauges(tenant) == (None, None, None)
