"""The muxer's pure decisions: where a job's output goes, what `job.completed` says about it, and what
its consumers refuse before the database.

Recording chunk results, the assembly claim and its fencing, and the build itself need PostgreSQL,
MinIO and ffmpeg (tests/integration/test_chunk_lifecycle.py, test_lost_tries_and_fencing.py,
test_source_gone.py, tests/e2e).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.classify import is_transient
from infiniteflow_common.db import Chunk, Job
from infiniteflow_common.deps import Deps
from infiniteflow_common.domain import JobStatus
from infiniteflow_common.errors import InvalidMessage
from infiniteflow_common.events import JobCompleted, JobParams, JobSplit
from infiniteflow_common.topics import Topic
from services.muxer.assemble import OutputTiming
from services.muxer.config import MuxerSettings
from services.muxer.handlers import Assembled, AssemblyLost, MuxHandler, completion, output_key
from tests.support.chunks import full_spec
from tests.support.in_memory import InMemoryPublish, delivery_of

CREATED = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DONE = CREATED + timedelta(minutes=3)
JOB_ID = uuid.UUID("0b6f1c9e-2d4a-4f1b-9a55-3c1e7d2a8b10")
PARAMS = JobParams(
    multiplier=2, target_fps=None, engine="rife", quality="fast", webhook_url=None, model="hdv3"
)


def job(**fields: Any) -> Job:
    values: dict[str, Any] = dict(
        id=JOB_ID, source="bucket", source_bucket="incoming", source_key="holiday/My Clip (1).MOV",
        source_etag="e", status="muxing", params=PARAMS, created_at=CREATED,
    )  # fmt: skip
    values.update(fields)
    return Job(**values)


SPLIT = JobSplit(
    job_id=JOB_ID, chunk_count=2, source_frame_count=300, in_fps_num=30000, in_fps_den=1001, out_fps_num=60000,
    out_fps_den=1001, out_frame_count=600, scene_cuts=(0, 150), vfr_converted=False, split_at=CREATED,
    container="mkv",
)  # fmt: skip
ASSEMBLED = Assembled(
    key=f"{JOB_ID}/My_Clip_1_59.94fps.mkv",
    size=4096,
    measured=OutputTiming(
        video_frames=600, video_start_s=0.0, video_duration_s=10.01, audio_start_s=None, audio_duration_s=None
    ),
)


def parts(*psnrs: float | None) -> list[Chunk]:
    return [
        Chunk(job_id=JOB_ID, chunk_index=i, first_frame=i * 150, frame_count=151, frames_out=300,
              quality_psnr_db=psnr, quality_ssim=0.98 if psnr else None, model="hdv3")
        for i, psnr in enumerate(psnrs)
    ]  # fmt: skip


def complete(chunks: list[Chunk], **overrides: Any) -> tuple[JobCompleted, Any]:
    return completion(
        overrides.pop("job", job()), SPLIT, chunks, ASSEMBLED, floor_db=30.0, output_bucket="output",
        completed_at=DONE, mux_seconds=4.5, interpolate_s=120.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("source_key", "rate", "prefix", "container", "expected"),
    [
        ("holiday/My Clip (1).MOV", Fraction(60000, 1001), "", "mp4", f"{JOB_ID}/My_Clip_1_59.94fps.mp4"),
        ("a.mp4", Fraction(60), "tenants/acme/", "mkv", f"tenants/acme/{JOB_ID}/a_60fps.mkv"),
        ("clip.mp4", Fraction(120, 1), "", "mov", f"{JOB_ID}/clip_120fps.mov"),
        ("...mp4", Fraction(48), "", "mp4", f"{JOB_ID}/video_48fps.mp4"),
        ("ü€.mp4", Fraction(24000, 1001), "", "mp4", f"{JOB_ID}/video_23.976fps.mp4"),
    ],
    ids=["unsafe-characters", "tenant-prefix", "mov", "nothing-safe-left", "not-ascii"],
)
def test_the_output_key_names_the_job_the_source_and_the_rate_in_safe_characters(
    source_key: str, rate: Fraction, prefix: str, container: str, expected: str
) -> None:
    assert output_key(job(source_key=source_key), rate, prefix, container) == expected


def test_a_long_source_name_is_cut_so_the_key_stays_short() -> None:
    key = output_key(job(source_key="x" * 300 + ".mp4"), Fraction(60), "", "mp4")
    assert key == f"{JOB_ID}/{'x' * 80}_60fps.mp4"


async def test_a_completed_job_is_announced_with_its_output_rates_counts_and_times(
    publish: InMemoryPublish,
) -> None:
    event, result = complete(parts(41.0, 39.0))
    await publish(Topic.JOB_COMPLETED, event)

    [announced] = publish.on(Topic.JOB_COMPLETED)
    assert announced == event, "the event survives the Avro contract unchanged"
    assert isinstance(announced, JobCompleted)
    assert (announced.output_bucket, announced.output_key, announced.output_size_bytes) == (
        "output", ASSEMBLED.key, 4096,
    )  # fmt: skip
    assert (announced.in_fps_num, announced.in_fps_den, announced.out_fps_num, announced.out_fps_den) == (
        30000, 1001, 60000, 1001,
    )  # fmt: skip
    assert (announced.in_frame_count, announced.out_frame_count) == (300, 600)
    assert announced.duration_s == pytest.approx(600 * 1001 / 60000)
    assert announced.processing_seconds == 180.0
    assert announced.status == JobStatus.COMPLETED.value
    assert announced.params == PARAMS
    assert (result.output_key, result.out_fps, result.container) == (ASSEMBLED.key, "60000/1001", "mkv")


async def test_a_chunk_below_the_quality_floor_completes_the_job_with_warnings_naming_it() -> None:
    event, _ = complete(parts(41.0, 24.5))
    assert event.status == JobStatus.COMPLETED_WITH_WARNINGS.value
    assert event.quality is not None
    assert (event.quality.chunks_below_floor, event.quality.worst_chunk_index) == ((1,), 1)
    assert event.quality.psnr_db == pytest.approx((41.0 + 24.5) / 2)


async def test_a_job_whose_chunks_were_not_checked_completes_without_a_quality_report() -> None:
    event, _ = complete(parts(None, None))
    assert (event.status, event.quality) == (JobStatus.COMPLETED.value, None)


def test_a_job_without_parameters_is_never_completed() -> None:
    with pytest.raises(ValueError, match="no parameters"):
        complete(parts(41.0), job=job(params={"multiplier": 3}))


def test_a_lost_assembly_claim_is_retried_not_dead_lettered() -> None:
    # the consumer retries transient errors; the redelivered record finds the job done or in other hands
    assert is_transient(AssemblyLost("the assembly claim was lost"))


@pytest.mark.parametrize(
    ("on", "topic"),
    [("on_chunk", Topic.CHUNK_INTERPOLATED), ("on_plan", Topic.JOB_SPLIT)],
)
async def test_a_record_of_another_type_is_refused_before_the_muxer_touches_the_job(
    schema_catalog: SchemaCatalog, publish: InMemoryPublish, on: str, topic: Topic
) -> None:
    # unbound: a handler that reached the database would raise, not connect
    deps = Deps(sessions=async_sessionmaker(), storage=None, catalog=schema_catalog, publish=publish)  # type: ignore[arg-type]
    handler = MuxHandler(settings=MuxerSettings(), deps=deps)
    wrong = delivery_of(schema_catalog, full_spec(JOB_ID, 0), topic=topic)

    with pytest.raises(InvalidMessage) as refused:
        await getattr(handler, on)(wrong)
    assert refused.value.code == "E_UNEXPECTED_RECORD"
    assert publish.published == []
