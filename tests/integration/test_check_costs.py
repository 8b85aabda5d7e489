"""The status API's `timings.checks`: what model choice and self-checks cost a job, from its chunk rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common import chunks
from infiniteflow_common.db import Chunk, Job, transaction
from infiniteflow_common.events import ChunkInterpolated
from infiniteflow_common.reports import CheckCosts, check_view

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def job_id(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[uuid.UUID]:
    """A job with three planned chunks (deleted afterwards)."""
    job = uuid.uuid4()
    async with transaction(sessions) as session:
        session.add(Job(id=job, source="bucket", source_bucket="incoming", source_key=f"t/{job}", source_etag="e",
                        status="interpolating", chunks_total=3, params={}))  # fmt: skip
        await session.flush()
        for index in range(3):
            session.add(Chunk(job_id=job, chunk_index=index, first_frame=index * 10, frame_count=11))
    yield job
    async with transaction(sessions) as session:
        await session.execute(text("delete from jobs where id = :id"), {"id": job})


def _result(
    job: uuid.UUID, index: int, seconds: float, check_s: float, scores: dict[str, float] | None
) -> ChunkInterpolated:
    return ChunkInterpolated(
        job_id=job, chunk_index=index, object_key=f"{job}/out/{index}", frames_out=20, worker_id="w",
        lease_epoch=0, attempt=1, engine="rife", device="cpu", scale=1.0, interp_seconds=seconds,
        finished_at=datetime.now(UTC), quality_psnr_db=35.0, quality_samples=1, quality_seconds=check_s,
        model="hdv3", model_scores=scores,
    )  # fmt: skip


async def test_checked_choices_and_plain_self_checks_are_summed_apart_over_finished_chunks(
    sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID
) -> None:
    async with transaction(sessions) as session:
        # chosen by a check: its quality_seconds is the whole choice (the winner's check included)
        await chunks.record_result(session, _result(job_id, 0, 100.0, 2.5, {"hdv3": 35.0, "v4.25": 34.0}))
        # chosen by the rule: its own self-check
        await chunks.record_result(session, _result(job_id, 1, 50.0, 1.0, None))
    async with sessions() as session:
        costs = await chunks.check_costs(session, job_id)
    assert costs == CheckCosts(chunks=2, engine_s=150.0, model_choice_s=2.5, quality_s=1.0), (
        "chunk 2 is not finished: not counted"
    )
    view = check_view(costs)
    assert view is not None
    assert view["share"] == pytest.approx(3.5 / 150, abs=1e-4)
    assert view["budget"] == 0.06
    assert (view["model_choice_seconds"], view["quality_seconds"]) == (2.5, 1.0)
