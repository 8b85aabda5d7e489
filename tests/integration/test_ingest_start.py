"""Starting jobs on the real stack: one job and one VideoUploaded per object, refusals reported.

Each test uploads under its own key and publishes to this module's private topics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.events import JobFailed, UploadSource, VideoUploaded, decode_event
from infiniteflow_common.kafka import Delivery
from infiniteflow_common.runtime import Runtime
from services.ingest.source_events import SourceEventHandler
from services.ingest.sweeper import Sweeper
from tests.integration.ingest_support import (
    MinioEventTail,
    isolated_settings,
    jobs_for,
    private_job_topics,
    private_runtime,
    records_keyed,
    starter_for,
    upload,
)
from tests.support.clips import hostile, video

pytestmark = [pytest.mark.kafka, pytest.mark.minio, pytest.mark.postgres, pytest.mark.ffmpeg]

SETTINGS = isolated_settings()
CATALOG = SchemaCatalog.load()


@pytest.fixture(scope="module")
def topics() -> Iterator[tuple[str, str]]:
    with private_job_topics(SETTINGS, "ingest") as pair:
        yield pair


@pytest.fixture(scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    async with private_runtime(SETTINGS) as rt:
        yield rt


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("media")
    return {**hostile(directory), "clip": video(directory / "clip.mp4", seconds=1)}


async def test_an_upload_becomes_a_pending_job_and_one_video_uploaded(
    runtime: Runtime, topics: tuple[str, str], media: dict[str, Path], unique: str
) -> None:
    uploaded, _ = topics
    starter = starter_for(runtime, SETTINGS, *topics)
    key = f"tests/{unique}/Bergwanderung – 100% echt + mehr.mp4"
    record = upload(runtime, SETTINGS, key, media["clip"], {"multiplier": "4", "webhook-url": "http://h/x"})

    result = await starter.start(record, source="bucket")

    assert result.created
    assert result.handled_now
    [job] = await jobs_for(runtime, SETTINGS.incoming_bucket, key)
    assert (job.id, job.status, job.source, job.source_etag) == (
        result.job_id,
        "pending",
        "bucket",
        record.etag,
    )
    assert job.progress == 2
    assert job.params.multiplier == 4
    assert job.params.webhook_url == "http://h/x"
    assert job.probe is not None
    assert job.probe.frame_count == 30
    [message] = records_keyed(SETTINGS, uploaded, str(job.id))
    event = decode_event(CATALOG, message.value(), VideoUploaded)
    assert (event.job_id, event.key, event.etag, event.source) == (job.id, key, record.etag, "bucket")
    assert (event.params.multiplier, event.probe.width, event.probe.height) == (4, 320, 180)


async def test_the_same_minio_event_twice_gives_one_job_and_one_video_uploaded(
    runtime: Runtime, topics: tuple[str, str], media: dict[str, Path], unique: str
) -> None:
    uploaded, _ = topics
    handler = SourceEventHandler(
        incoming_bucket=SETTINGS.incoming_bucket, start_job=starter_for(runtime, SETTINGS, *topics)
    )
    key = f"tests/{unique}/twice.mp4"
    tail = MinioEventTail(SETTINGS)
    try:
        upload(runtime, SETTINGS, key, media["clip"], {})
        raw, record = tail.wait_for(key)
    finally:
        tail.close()
    for offset in (0, 1):
        await handler(Delivery("minio.events", 0, offset, None, raw, {}))

    [job] = await jobs_for(runtime, SETTINGS.incoming_bucket, key)
    assert job.source_etag == record.etag
    assert len(records_keyed(SETTINGS, uploaded, str(job.id))) == 1


@pytest.mark.parametrize(
    ("name", "metadata", "code"),
    [
        ("hls", {"webhook-url": "http://127.0.0.1:1/hook"}, "E_PROBE_FORMAT_NOT_ALLOWED"),
        ("empty", {"webhook-url": "http://127.0.0.1:1/hook"}, "E_PROBE_EMPTY"),
        ("audio", {}, "E_PROBE_NO_VIDEO"),
        ("clip", {"multiplier": "3", "webhook-url": "http://127.0.0.1:1/hook"}, "E_PARAM_INVALID"),
        ("clip", {"target-fps": "24"}, "E_PARAM_INVALID"),
    ],
)
async def test_refused_uploads_fail_the_job_and_announce_it(
    runtime: Runtime,
    topics: tuple[str, str],
    media: dict[str, Path],
    unique: str,
    name: str,
    metadata: dict[str, str],
    code: str,
) -> None:
    uploaded, failed = topics
    starter = starter_for(runtime, SETTINGS, *topics)
    key = f"tests/{unique}/-$(touch pwned)\n../{name}.mp4"
    record = upload(runtime, SETTINGS, key, media[name], metadata)

    result = await starter.start(record, source="bucket")
    again = await starter.start(record, source="bucket")

    assert (result.status, result.error_code) == ("failed", code)
    assert not again.handled_now
    [job] = await jobs_for(runtime, SETTINGS.incoming_bucket, key)
    assert (job.status, job.error_code) == ("failed", code)
    assert job.error_message
    assert records_keyed(SETTINGS, uploaded, str(job.id)) == []
    [message] = records_keyed(SETTINGS, failed, str(job.id))
    event = decode_event(CATALOG, message.value(), JobFailed)
    assert (event.stage, event.error_code, event.key) == ("ingest", code, key)
    if code != "E_PARAM_INVALID" and "webhook-url" in metadata:
        assert event.params is not None
        assert event.params.webhook_url == metadata["webhook-url"]
    assert _nothing_written_by_the_key()


def _nothing_written_by_the_key() -> bool:
    return not Path("pwned").exists()


async def test_an_object_gone_before_it_is_read_fails_with_source_gone(
    runtime: Runtime, topics: tuple[str, str], unique: str
) -> None:
    key = f"tests/{unique}/gone.mp4"
    record = upload(runtime, SETTINGS, key, b"x" * 100, {})
    runtime.storage.remove_object(SETTINGS.incoming_bucket, key)

    result = await starter_for(runtime, SETTINGS, *topics).start(record, source="bucket")

    assert (result.status, result.error_code) == ("failed", "E_SOURCE_GONE")


async def test_an_object_over_the_size_limit_is_refused_before_download(
    runtime: Runtime, topics: tuple[str, str], unique: str
) -> None:
    small = isolated_settings(incoming_bucket=SETTINGS.incoming_bucket, max_upload_bytes=1000)
    key = f"tests/{unique}/big.mp4"
    record = upload(runtime, small, key, b"x" * 5000, {})

    result = await starter_for(runtime, small, *topics).start(record, source="bucket")

    assert (result.status, result.error_code) == ("failed", "E_UPLOAD_TOO_LARGE")


async def test_the_sweeper_starts_an_object_whose_event_nobody_handled(
    runtime: Runtime, topics: tuple[str, str], media: dict[str, Path], unique: str
) -> None:
    uploaded, _ = topics
    starter = starter_for(runtime, SETTINGS, *topics)
    sweeper = Sweeper(sessions=runtime.sessions, storage=runtime.storage, starter=starter, settings=SETTINGS)
    prefix = f"tests/{unique}/"
    upload(runtime, SETTINGS, prefix + "orphan.mp4", media["clip"], {"multiplier": "8"})

    too_young = await sweeper.sweep_once(prefix=prefix)
    first = await sweeper.sweep_once(prefix=prefix, min_age_s=0)
    second = await sweeper.sweep_once(prefix=prefix, min_age_s=0)

    [job] = await jobs_for(runtime, SETTINGS.incoming_bucket, prefix + "orphan.mp4")
    assert too_young == []
    assert [r.job_id for r in first] == [job.id]
    assert second == []
    assert (job.source, job.status, job.params.multiplier) == ("sweeper", "pending", 8)
    assert len(records_keyed(SETTINGS, uploaded, str(job.id))) == 1


async def test_racing_starts_of_one_object_publish_once(
    runtime: Runtime, topics: tuple[str, str], media: dict[str, Path], unique: str
) -> None:
    """The API and the bucket event (or two replicas) starting the same upload at once."""
    uploaded, _ = topics
    key = f"tests/{unique}/race.mp4"
    record = upload(runtime, SETTINGS, key, media["clip"], {})
    starters = [starter_for(runtime, SETTINGS, *topics) for _ in range(3)]
    sources: tuple[UploadSource, ...] = ("api", "bucket", "sweeper")

    results = await asyncio.gather(
        *(s.start(record, source=source) for s, source in zip(starters, sources, strict=True))
    )

    assert len({r.job_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert sum(r.handled_now for r in results) == 1
    assert len(records_keyed(SETTINGS, uploaded, str(results[0].job_id))) == 1
