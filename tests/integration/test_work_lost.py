"""A job whose chunk outputs vanished from the work bucket before assembly makes them again.

A job can outlive the work bucket's lifecycle rule (`WORK_RETENTION_DAYS`): a long queue, a paused
fleet. Its oldest chunk outputs expire while it still runs. The source is still there, so the muxer
plans those chunks again instead of failing the job with a misleading `E_SOURCE_GONE`.
Real PostgreSQL and MinIO; the producer is recorded.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common import chunks
from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Chunk, Job, transaction
from infiniteflow_common.deps import Deps
from infiniteflow_common.events import ChunkInterpolated, ChunkReady, Event, JobSplit
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import delete_prefix, make_client
from services.muxer.config import MuxerSettings
from services.muxer.handlers import MuxHandler
from tests.support.chunks import full_spec

pytestmark = [pytest.mark.postgres, pytest.mark.minio]


@pytest.fixture
async def finished_job(
    sessions: async_sessionmaker[AsyncSession], settings: CommonSettings
) -> AsyncIterator[uuid.UUID]:
    """A split job whose two chunks are done; only chunk 0's output is still in the work bucket."""
    job_id = uuid.uuid4()
    catalog = SchemaCatalog.load()
    plan = JobSplit.from_avro(catalog.example("JobSplit") | {"job_id": str(job_id), "chunk_count": 2})
    async with transaction(sessions) as session:
        session.add(Job(id=job_id, source="bucket", source_bucket="incoming", source_key=f"t/{job_id}",
                        source_etag="e", status="interpolating", chunks_total=2, params={},
                        plan=plan))  # fmt: skip
        await session.flush()
        for index in range(2):
            spec = full_spec(job_id, index)
            session.add(Chunk(job_id=job_id, chunk_index=index, first_frame=index * 10, frame_count=11,
                              status="done", lease_epoch=1, output_key=f"{job_id}/out/{index}", frames_out=20,
                              spec=spec))  # fmt: skip
    storage = make_client(settings)
    storage.put_object(settings.work_bucket, f"{job_id}/out/0", io.BytesIO(b"chunk 0"), 7)
    yield job_id
    delete_prefix(storage, settings.work_bucket, f"{job_id}/")
    async with transaction(sessions) as session:
        await session.execute(text("delete from jobs where id = :id"), {"id": job_id})


async def test_a_chunk_output_lost_before_assembly_is_made_again_and_the_job_goes_on(
    sessions: async_sessionmaker[AsyncSession], settings: CommonSettings, finished_job: uuid.UUID
) -> None:
    published: list[tuple[str, Event]] = []

    async def publish(topic: str, event: Event, **_: object) -> None:
        published.append((topic, event))

    deps = Deps(
        sessions=sessions, storage=make_client(settings), catalog=SchemaCatalog.load(), publish=publish
    )
    muxer = MuxHandler(settings=MuxerSettings(), deps=deps)

    await muxer._maybe_assemble(finished_job)

    [(topic, again)] = published
    assert topic == "chunk.ready"
    assert isinstance(again, ChunkReady)
    assert (again.chunk_index, again.attempt) == (1, 2), "the lost chunk only, as its next delivery"
    async with transaction(sessions) as session:
        job = await session.get(Job, finished_job)
        lost = await session.get(Chunk, (finished_job, 1))
        kept = await session.get(Chunk, (finished_job, 0))
    assert job is not None
    assert lost is not None
    assert kept is not None
    assert (job.status, job.error_code, job.mux_owner) == ("interpolating", None, None), "not failed"
    assert (lost.status, lost.lease_epoch, lost.output_key, lost.attempts) == ("pending", 2, None, 0)
    assert (kept.status, kept.lease_epoch) == ("done", 1), "the chunk whose output is there stays done"

    late = ChunkInterpolated.from_avro(
        SchemaCatalog.load().example("ChunkInterpolated")
        | {"job_id": str(finished_job), "chunk_index": 1, "lease_epoch": 1}
    )
    async with transaction(sessions) as session:
        assert await chunks.record_result(session, late) == "fenced", (
            "the lost output's result counts no more"
        )
