"""Ingest keeps its transactions short: slow downloads and probes hold no database connection.

Real PostgreSQL with a deliberately small pool; the probe is slowed down in-process (the download and
ffprobe themselves are covered by the other ingest tests), so the test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import session_factory, transaction
from infiniteflow_common.events import JobParams, MediaProbe, VideoUploaded, decode_event
from infiniteflow_common.jobs import get_job
from infiniteflow_common.minio_events import ObjectCreated
from infiniteflow_common.outbox import Outbox
from services.ingest.start import JobStarter, object_record
from tests.integration.ingest_support import isolated_settings

pytestmark = [pytest.mark.postgres]

POOL = 2
PROBE_S = 4.0
# Generous against a busy machine (a short transaction may take a second under load), yet a connection
# held across a probe makes a request that starts a quarter into it wait three quarters of it.
POOL_TIMEOUT_S = 0.75 * PROBE_S


class SlowProbe(JobStarter):
    """A starter whose download and probe take `PROBE_S` seconds (a large upload)."""

    probes: list[uuid.UUID]

    async def _fetch_and_probe(
        self, job_id: uuid.UUID, record: ObjectCreated, params: JobParams
    ) -> tuple[MediaProbe, list[dict[str, Any]]]:
        self.probes.append(job_id)
        await asyncio.sleep(PROBE_S)
        probe = MediaProbe(
            format_name="mov,mp4,m4a,3gp,3g2,mj2", video_codec="h264", width=64, height=64,
            pix_fmt="yuv420p", bit_depth=8, fps_num=30, fps_den=1, avg_fps_num=30, avg_fps_den=1,
            frame_count=30, duration_s=1.0, is_vfr=False, rotation=0, color_range=None, color_space=None,
            color_transfer=None, color_primaries=None, has_audio=False, audio_streams=0, subtitle_streams=0,
        )  # fmt: skip
        return probe, [{"index": 0, "codec_type": "video", "codec_name": "h264"}]


@pytest.fixture
async def small_pool() -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions over a pool of `POOL` connections that waits at most `POOL_TIMEOUT_S` for one."""
    settings = isolated_settings()
    engine = create_async_engine(
        settings.database_url.get_secret_value(), pool_size=POOL, max_overflow=0, pool_timeout=POOL_TIMEOUT_S
    )
    yield session_factory(engine)
    await engine.dispose()


async def test_many_slow_probes_at_once_do_not_starve_other_requests(
    small_pool: async_sessionmaker[AsyncSession], unique: str
) -> None:
    settings = isolated_settings()
    catalog = SchemaCatalog.load()
    uploaded, failed = f"test.short.uploaded.{unique}", f"test.short.failed.{unique}"
    published: list[tuple[str, VideoUploaded]] = []

    async def send(value: bytes, topic: str, key: str | None) -> None:
        published.append((topic, decode_event(catalog, value, VideoUploaded)))

    starter = SlowProbe(
        sessions=small_pool,
        storage=None,  # type: ignore[arg-type]
        outbox=Outbox(small_pool, catalog, send, topics=[uploaded, failed]),
        settings=settings,
        uploaded_topic=uploaded,
        failed_topic=failed,
    )
    starter.probes = []
    records = [
        object_record(
            bucket=settings.incoming_bucket, key=f"tests/{unique}/{n}.mp4", etag=f"e{n}", size=10, metadata={}
        )
        for n in range(3 * POOL)
    ]
    jobs = [(await starter.create(record, source="bucket"))[0].id for record in records]
    try:
        # the API and the bucket event of the first upload arrive together: it is probed once
        starting = asyncio.gather(
            *(
                starter.process(job_id, record, source="bucket")
                for job_id, record in zip(jobs, records, strict=True)
            ),
            starter.process(jobs[0], records[0], source="api"),
        )
        await asyncio.sleep(PROBE_S / 4)
        waited = []
        for _ in range(3):  # a status request, a health check, the event consumer's update…
            began = time.monotonic()
            async with small_pool() as session:
                assert await get_job(session, jobs[-1]) is not None
            waited.append(time.monotonic() - began)
        results = await starting
        assert max(waited) < PROBE_S / 2, f"other requests waited {max(waited):.2f} s for a connection"
        assert [r.status for r in results] == ["pending"] * (len(jobs) + 1)
        assert sum(r.handled_now for r in results) == len(jobs), "each job is started exactly once"
        assert sorted(map(str, starter.probes)) == sorted(map(str, jobs)), "each upload is probed once"
        assert sorted(str(event.job_id) for _, event in published) == sorted(map(str, jobs))
        async with small_pool() as session:
            for job_id in jobs:
                job = await get_job(session, job_id)
                assert job is not None
                assert job.probe is not None
    finally:
        async with transaction(small_pool) as session:
            await session.execute(text("delete from jobs where id = any(:ids)"), {"ids": jobs})
