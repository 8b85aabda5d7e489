"""A chunk that cannot fit its worker's memory at any settings fails its job at once, before any decoding."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Job, transaction
from infiniteflow_common.events import Event, JobFailed
from services.gpu_interp import metrics
from tests.support.chunks import as_delivery, chunk_worker, full_spec

pytestmark = [pytest.mark.postgres]

GIB = 1 << 30


async def test_an_8k_chunk_over_a_small_budget_fails_its_job_at_once_with_its_code_and_decodes_nothing(
    sessions: async_sessionmaker[AsyncSession], job_with_chunks: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = job_with_chunks  # an 8K job: its chunk's spec below says 7680×4320
    published: list[Event] = []
    worker = chunk_worker(sessions, "small-worker", published, worker_memory_bytes=2 * GIB)
    decoded: list[Any] = []
    monkeypatch.setattr(worker, "_interpolate", lambda *args, **kwargs: decoded.append(args))
    spec = full_spec(job_id, 0).model_copy(update={"width": 7680, "height": 4320})
    too_large_before = metrics.MEMORY_PLANS.labels("too_large")._value.get()

    await worker(
        as_delivery(SchemaCatalog.load(), spec)
    )  # handled: the record is committed, nothing to retry

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
