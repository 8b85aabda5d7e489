"""A source deleted (or unreadable) before a stage reads it fails its job with a code; nothing loops.

The splitter's real handler runs under the real reliable consumer, on the real Kafka, MinIO and
PostgreSQL; its outputs go to private topics so no other consumer sees them.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from minio.error import S3Error
from sqlalchemy import text

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.db import Job, make_engine, session_factory, transaction
from infiniteflow_common.deps import Deps
from infiniteflow_common.events import Event, JobFailed, JobParams, MediaProbe, VideoUploaded, encode_event
from infiniteflow_common.kafka import H_ERROR_CODE, Delivery, make_broker
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from infiniteflow_common.topics import dlq_of
from services.splitter.config import SplitterSettings
from services.splitter.handlers import SplitHandler, SplitPlanner
from tests.integration.kafka_support import (
    committed_offset,
    private_topic,
    produce,
    read_all,
    running_consumer,
)
from tests.support.waiting import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.minio, pytest.mark.postgres]

CATALOG = SchemaCatalog.load()


@pytest.fixture
def fast_retries(settings: CommonSettings) -> CommonSettings:
    # A retried record would stop the consumer within about a second: the test then fails fast.
    return settings.model_copy(
        update={"retry_base_delay_s": 0.05, "retry_max_delay_s": 0.2, "retry_max_attempts": 3}
    )


def probe() -> MediaProbe:
    return MediaProbe(
        format_name="mov,mp4,m4a,3gp,3g2,mj2", video_codec="h264", width=64, height=64, pix_fmt="yuv420p",
        bit_depth=8, fps_num=30, fps_den=1, avg_fps_num=30, avg_fps_den=1, frame_count=30, duration_s=1.0,
        is_vfr=False, rotation=0, color_range=None, color_space=None, color_transfer=None,
        color_primaries=None, has_audio=False, audio_streams=0, subtitle_streams=0,
    )  # fmt: skip


@pytest.fixture
async def deleted_sources(settings: CommonSettings, unique: str) -> AsyncIterator[list[VideoUploaded]]:
    """Two pending jobs whose source objects were uploaded, announced, then deleted."""
    storage = make_client(settings)
    engine = make_engine(settings.database_url.get_secret_value())
    sessions = session_factory(engine)
    events = []
    async with transaction(sessions) as session:
        for n in range(2):
            key = f"tests/{unique}/gone-{n}.mp4"
            written = storage.put_object(settings.incoming_bucket, key, io.BytesIO(b"x" * 10), 10)
            storage.remove_object(settings.incoming_bucket, key)
            job = Job(source="bucket", source_bucket=settings.incoming_bucket, source_key=key,
                      source_etag=str(written.etag), size_bytes=10, params={})  # fmt: skip
            session.add(job)
            params = JobParams(multiplier=2, target_fps=None, engine="flow", quality="fast", webhook_url=None)
            events.append(
                VideoUploaded(
                    job_id=job.id,
                    source="bucket",
                    bucket=settings.incoming_bucket,
                    key=key,
                    etag=str(written.etag),
                    version_id=None,
                    size_bytes=10,
                    params=params,
                    probe=probe(),
                    uploaded_at=datetime.now(UTC),
                )
            )
    try:
        yield events
    finally:
        async with transaction(sessions) as session:
            await session.execute(
                text("delete from jobs where id = any(:ids)"), {"ids": [e.job_id for e in events]}
            )
        await engine.dispose()


async def job_state(settings: CommonSettings, job_id: uuid.UUID) -> tuple[str, str | None]:
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        async with session_factory(engine)() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            return job.status, job.error_code
    finally:
        await engine.dispose()


async def test_a_source_deleted_before_the_splitter_reads_it_fails_the_job_and_the_splitter_goes_on(
    fast_retries: CommonSettings, deleted_sources: list[VideoUploaded], unique: str, tmp_path: Path
) -> None:
    with (
        private_topic(fast_retries, f"test.gone.uploaded.{unique}") as uploaded,
        private_topic(fast_retries, f"test.gone.failed.{unique}") as failed,
    ):
        broker = make_broker(fast_retries, "splitter-test")
        await broker.start()
        engine = make_engine(fast_retries.database_url.get_secret_value())

        async def publish(
            topic: str, event: Event, *, key: str | None = None, partition: int | None = None
        ) -> None:
            assert topic == "job.failed", f"nothing but the failure is expected, got {topic}"
            await broker.publish(
                encode_event(CATALOG, event), topic=failed, key=str(getattr(event, "job_id", ""))
            )

        deps = Deps(sessions=session_factory(engine), storage=make_client(fast_retries), catalog=CATALOG,
                    publish=publish)  # fmt: skip
        planner = SplitPlanner(settings=SplitterSettings(split_poll_s=0.2), deps=deps)
        handler = SplitHandler(deps=deps, wake=planner.wake)
        planning = asyncio.create_task(planner.run())
        try:
            for event in deleted_sources:
                produce(
                    fast_retries, uploaded, [encode_event(CATALOG, event)], key=str(event.job_id).encode()
                )
            group = f"g-{unique}"
            async with running_consumer(
                fast_retries, uploaded, handler, group=group, service="splitter"
            ) as consumer:
                await eventually(
                    lambda: committed_offset(fast_retries, uploaded, group) == 2,
                    timeout_s=30,
                    what="the splitter to commit past both records",
                )
                assert consumer.fatal is None, "the splitter must keep consuming"
            for event in deleted_sources:

                async def failed_job(job_id: uuid.UUID = event.job_id) -> bool:
                    return (await job_state(fast_retries, job_id))[0] == "failed"

                await eventually(failed_job, timeout_s=30, what="the planner to fail the job")
                assert await job_state(fast_retries, event.job_id) == ("failed", "E_SOURCE_GONE")
            announced = read_all(fast_retries, failed, 2, timeout_s=10)
            codes = {
                (str(e.job_id), e.error_code, e.stage)
                for e in (JobFailed.from_avro(CATALOG.decode(m.value(), "JobFailed")[1]) for m in announced)
            }
            assert codes == {(str(e.job_id), "E_SOURCE_GONE", "splitter") for e in deleted_sources}
            assert read_all(fast_retries, dlq_of(uploaded), 1, timeout_s=2) == [], "the records were fine"
        finally:
            planning.cancel()
            await asyncio.gather(planning, return_exceptions=True)
            await broker.stop()
            await engine.dispose()


async def test_an_object_error_escaping_a_handler_is_dead_lettered_with_its_code_not_retried(
    fast_retries: CommonSettings, unique: str
) -> None:
    calls: list[int] = []
    storage = make_client(fast_retries)

    async def handle(delivery: Delivery) -> None:
        calls.append(delivery.offset)
        if delivery.value == b"gone":
            storage.stat_object(fast_retries.incoming_bucket, f"tests/{unique}/never-uploaded.mp4")

    with private_topic(fast_retries, f"test.gone.escape.{unique}") as topic:
        produce(fast_retries, topic, [b"gone", b"fine"])
        group = f"g-{unique}"
        async with running_consumer(fast_retries, topic, handle, group=group) as consumer:
            await eventually(
                lambda: committed_offset(fast_retries, topic, group) == 2, what="commit past both"
            )
            assert consumer.fatal is None
        [dead] = read_all(fast_retries, dlq_of(topic), 1)
    assert calls == [0, 1], "a gone object is not retried"
    assert dict(dead.headers())[H_ERROR_CODE] == b"E_SOURCE_GONE"
    with pytest.raises(S3Error):
        storage.stat_object(fast_retries.incoming_bucket, f"tests/{unique}/never-uploaded.mp4")
