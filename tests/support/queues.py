"""A queue of three jobs in PostgreSQL: one running, two waiting. `queue_of_three` is a fixture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.db import Chunk, Job, transaction, utcnow
from infiniteflow_common.events import JobParams, JobSplit, MediaProbe

PARAMS = JobParams(multiplier=2, target_fps=None, engine="flow", quality="fast", webhook_url=None)
PROBE = MediaProbe(
    format_name="mov,mp4,m4a,3gp,3g2,mj2", video_codec="h264", width=1920, height=1080, pix_fmt="yuv420p",
    bit_depth=8, fps_num=30, fps_den=1, avg_fps_num=30, avg_fps_den=1, frame_count=200, duration_s=200 / 30,
    is_vfr=False, rotation=0, color_range=None, color_space=None, color_transfer=None,
    color_primaries=None, has_audio=False, audio_streams=0, subtitle_streams=0,
)  # fmt: skip


@dataclass(frozen=True)
class QueueOfThree:
    """A job with a chunk running, then two queued jobs: the newer one has the higher priority."""

    running: uuid.UUID
    low: uuid.UUID
    high: uuid.UUID


def queued_job(
    job_id: uuid.UUID,
    *,
    priority: int,
    age_s: float,
    status: str = "interpolating",
    tenant: str | None = None,
) -> Job:
    return Job(
        id=job_id, tenant_id=tenant, source="bucket", source_bucket="incoming", source_key=f"t/{job_id}", source_etag="e",
        status=status, priority=priority, chunks_total=2, params=PARAMS, probe=PROBE,
        plan=JobSplit(job_id=job_id, chunk_count=2, source_frame_count=200, in_fps_num=30, in_fps_den=1,
                      out_fps_num=60, out_fps_den=1, out_frame_count=400, scene_cuts=(), vfr_converted=False,
                      split_at=utcnow()),
        created_at=utcnow() - timedelta(seconds=age_s),
    )  # fmt: skip


@pytest.fixture
async def queue_of_three(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[QueueOfThree]:
    """Three anonymous jobs of two chunks of 100 frames (deleted afterwards)."""
    jobs = QueueOfThree(running=uuid.uuid4(), low=uuid.uuid4(), high=uuid.uuid4())
    now = utcnow()
    async with transaction(sessions) as session:
        session.add(queued_job(jobs.running, priority=0, age_s=60))
        session.add(queued_job(jobs.low, priority=0, age_s=30))
        session.add(queued_job(jobs.high, priority=10, age_s=10))
        await session.flush()
        for job_id in (jobs.running, jobs.low, jobs.high):
            for index in range(2):
                session.add(Chunk(job_id=job_id, chunk_index=index, first_frame=index * 100, frame_count=100))
        await session.flush()
        await session.execute(
            text(
                "update chunks set status = 'claimed', worker = 'w', lease_epoch = 1, started_at = :now,"
                " lease_expires_at = :until where job_id = :id and chunk_index = 0"
            ),
            {"now": now, "until": now + timedelta(minutes=5), "id": jobs.running},
        )
    yield jobs
    async with transaction(sessions) as session:
        await session.execute(
            text("delete from jobs where id = any(:ids)"), {"ids": [jobs.running, jobs.low, jobs.high]}
        )
