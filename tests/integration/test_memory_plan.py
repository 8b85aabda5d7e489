"""A chunk that cannot fit its worker's memory at any settings fails its job at once, before any decoding."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Chunk, Job, make_engine, session_factory, transaction
from infiniteflow_common.events import Event, JobFailed
from infiniteflow_common.settings import CommonSettings
from services.gpu_interp import metrics
from tests.integration.test_chunk_lifecycle import _delivery, _full_spec, _worker

pytestmark = [pytest.mark.postgres]

GIB = 1 << 30


@pytest.fixture
async def sessions(settings: CommonSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.database_url.get_secret_value())
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def job_id(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[uuid.UUID]:
    """An 8K job split into two pending chunks (deleted afterwards)."""
    job_id = uuid.uuid4()
    async with transaction(sessions) as session:
        session.add(Job(id=job_id, source="bucket", source_bucket="incoming", source_key=f"t/{job_id}", source_etag="e",
                        status="interpolating", chunks_total=2, params={}))  # fmt: skip
        await session.flush()
        for index in range(2):
            session.add(Chunk(job_id=job_id, chunk_index=index, first_frame=index * 10, frame_count=11))
    yield job_id
    async with transaction(sessions) as session:
        await session.execute(text("delete from jobs where id = :id"), {"id": job_id})


async def test_an_8k_chunk_over_a_small_budget_fails_its_job_at_once_with_its_code_and_decodes_nothing(
    sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[Event] = []
    worker = _worker(sessions, "small-worker", published, worker_memory_bytes=2 * GIB)
    decoded: list[Any] = []
    monkeypatch.setattr(worker, "_interpolate", lambda *args, **kwargs: decoded.append(args))
    spec = _full_spec(job_id, 0).model_copy(update={"width": 7680, "height": 4320})
    too_large_before = metrics.MEMORY_PLANS.labels("too_large")._value.get()

    await worker(_delivery(SchemaCatalog.load(), spec))  # handled: the record is committed, nothing to retry

    assert decoded == [], "nothing was decoded or interpolated"
    [failed] = published
    assert isinstance(failed, JobFailed)
    assert (failed.error_code, failed.chunk_index, failed.stage) == (
        "E_CHUNK_TOO_LARGE_FOR_MEMORY",
        0,
        "gpu_interp",
    )
    assert "7680×4320" in (failed.error_message or "")
    async with transaction(sessions) as session:
        job = await session.get(Job, job_id)
    assert job is not None
    assert (job.status, job.error_code) == ("failed", "E_CHUNK_TOO_LARGE_FOR_MEMORY")
    assert metrics.MEMORY_PLANS.labels("too_large")._value.get() == too_large_before + 1
