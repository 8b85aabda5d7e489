"""Faults the pipeline survives: the job completes with exactly one output, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import UnknownSchemaError
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.e2e.conftest import wait_for_job
from tests.e2e.pipeline import ServiceProcess, running_pipeline
from tests.faults.conftest import FAULT_SETTINGS
from tests.fixtures.media import panning_clip, probe, video_stream

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.minio,
    pytest.mark.postgres,
    pytest.mark.ffmpeg,
    pytest.mark.slow,
]


async def _db(settings: CommonSettings) -> Any:
    return await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))


async def _claimed_by(settings: CommonSettings, key: str, worker_prefix: str, timeout_s: float = 60) -> int:
    """Wait until a chunk of the job is being worked on by the worker; returns its index."""
    connection = await _db(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            row = await connection.fetchrow(
                "select c.chunk_index from chunks c join jobs j on j.id = c.job_id "
                "where j.source_key = $1 and c.status = 'claimed' and c.worker like $2 limit 1",
                key, worker_prefix + "%",
            )  # fmt: skip
            if row:
                return int(row["chunk_index"])
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
    raise AssertionError(f"no chunk of {key} was claimed by {worker_prefix}")


def _completed_events(settings: CommonSettings, job_id: str) -> int:
    """How many job.completed records the job has (reads the whole topic)."""
    catalog = SchemaCatalog.load()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"audit-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics("job.completed", timeout=10).topics["job.completed"].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition("job.completed", p))[1] for p in partitions}
    consumer.assign([TopicPartition("job.completed", p, 0) for p in partitions])
    seen, count = dict.fromkeys(partitions, 0), 0
    deadline = time.monotonic() + 20
    while any(seen[p] < ends[p] for p in partitions) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        seen[message.partition()] = message.offset() + 1
        try:
            event = catalog.decode(message.value())[1]
        except UnknownSchemaError:  # written by another build sharing the local broker
            continue
        if str(event["job_id"]) == job_id:
            count += 1
    consumer.close()
    return count


async def _run_job(
    settings: CommonSettings,
    workdir: Path,
    key: str,
    seconds: float = 3,
    webhook: str | None = None,
    size: tuple[int, int] = (320, 180),
) -> tuple[Any, Path]:
    clip = panning_clip(workdir / "in.mp4", width=size[0], height=size[1], seconds=seconds)
    metadata = {"multiplier": "2", "engine": "flow"} | ({"webhook-url": webhook} if webhook else {})
    make_client(settings).fput_object(settings.incoming_bucket, key, str(clip.path), metadata=metadata)
    return clip, clip.path


async def _assert_one_good_output(
    settings: CommonSettings, job: dict[str, Any], frames: int, workdir: Path
) -> None:
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    listed = list(
        make_client(settings).list_objects(settings.output_bucket, prefix=f"{job['id']}/", recursive=True)
    )
    assert len(listed) == 1, "exactly one output"
    out = workdir / "out.mp4"
    make_client(settings).fget_object(job["output_bucket"], job["output_key"], str(out))
    assert int(video_stream(probe(out))["nb_read_frames"]) == 2 * frames
    assert _completed_events(settings, str(job["id"])) == 1, "exactly one job.completed"


async def test_a_worker_killed_mid_chunk_loses_nothing(
    fresh_pipeline: dict[str, ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    key = f"faults/{unique}/kill.mp4"
    _clip, _ = await _run_job(settings, tmp_path, key)
    await _claimed_by(settings, key, "worker-1")
    fresh_pipeline["gpu_interp-1"].process.send_signal(signal.SIGKILL)
    job = await wait_for_job(settings, key=key, timeout_s=180)
    await _assert_one_good_output(settings, job, 3 * 30, tmp_path)
    connection = await _db(settings)
    try:
        retried = await connection.fetchval(
            "select count(*) from chunks where job_id = $1 and attempts > 1", job["id"]
        )
    finally:
        await connection.close()
    assert retried >= 1, "the killed worker's chunk was taken over"


async def test_a_stopped_worker_that_wakes_up_late_is_fenced_off(
    fresh_pipeline: dict[str, ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    key = f"faults/{unique}/stop.mp4"
    _clip, _ = await _run_job(settings, tmp_path, key)
    await _claimed_by(settings, key, "worker-1")
    stopped = fresh_pipeline["gpu_interp-1"]
    stopped.process.send_signal(signal.SIGSTOP)  # past the session timeout and its lease
    try:
        job = await wait_for_job(settings, key=key, timeout_s=180)
    finally:
        stopped.process.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 30
    while "E_LEASE_LOST" not in stopped.log.read_text() and time.monotonic() < deadline:  # noqa: ASYNC110 - a log file, polled with a deadline
        await asyncio.sleep(0.2)
    assert "E_LEASE_LOST" in stopped.log.read_text(), "the late worker noticed it lost the chunk"
    await asyncio.sleep(2)  # anything it would wrongly publish now has had time to land
    await _assert_one_good_output(settings, job, 3 * 30, tmp_path)


async def test_replaying_every_topic_from_the_start_creates_nothing_new(
    settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    key = f"faults/{unique}/replay.mp4"
    groups = {"ingest": ["minio.events"], "splitter": ["video.uploaded"], "gpu_interp": ["chunk.ready"],
              "muxer": ["chunk.interpolated", "job.split"], "notifier": ["job.completed", "job.failed"]}  # fmt: skip
    # Every record of this test's job is replayed: each topic from where it ended before the job.
    # (Not from offset 0: a long-lived dev stack keeps every earlier run's records, among them the
    # poison-message test's garbage, and a replay of many of those in a row rightly trips the DLQ
    # breaker — a different test.)
    watcher = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"replay-{unique}"})
    starts = {
        (t, p): watcher.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
        for topics in groups.values()
        for t in topics
        for p in watcher.list_topics(t, timeout=10).topics[t].partitions
    }
    watcher.close()
    with running_pipeline(tmp_path / "logs-1", **FAULT_SETTINGS):
        await _run_job(settings, tmp_path, key, seconds=1)
        job = await wait_for_job(settings, key=key)
        assert job["status"] == "completed"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    from confluent_kafka import ConsumerGroupTopicPartitions

    for group, topics in groups.items():
        partitions = [TopicPartition(t, p, offset) for (t, p), offset in starts.items() if t in topics]
        for future in admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, partitions)]
        ).values():
            future.result(timeout=30)
    connection = await _db(settings)
    try:
        # Sources that have their job now. (A test session removes its job rows when it ends, so the
        # replayed history also holds uploads whose rows are gone: those become jobs again, as any
        # unseen upload does; what must never happen is a second job for a source that has one.)
        sources_before = {
            (r["source_bucket"], r["source_key"], r["source_etag"])
            for r in await connection.fetch("select source_bucket, source_key, source_etag from jobs")
        }
        delivered = [r["webhook_id"] for r in await connection.fetch(
            "select webhook_id from webhooks where status = 'delivered'"
        )]  # fmt: skip
        replay_started = await connection.fetchval("select now()")
    finally:
        await connection.close()
    with running_pipeline(tmp_path / "logs-2", **FAULT_SETTINGS) as services:
        await asyncio.sleep(1)
        consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "muxer"})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the muxer has re-read everything
            lag = 0
            for topic in ("chunk.interpolated",):
                for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                    [committed] = consumer.committed([TopicPartition(topic, p)], timeout=10)
                    high = consumer.get_watermark_offsets(TopicPartition(topic, p))[1]
                    lag += high - max(committed.offset, 0)
            if lag == 0:
                break
            await asyncio.sleep(1)
        consumer.close()
        assert all(s.alive() for s in services), "replays crash nothing"
    connection = await _db(settings)
    try:
        replayed = [
            (r["source_bucket"], r["source_key"], r["source_etag"])
            for r in await connection.fetch(
                "select source_bucket, source_key, source_etag from jobs where created_at >= $1",
                replay_started,
            )
        ]
        assert not [s for s in replayed if s in sources_before], "no second job for a source"
        twice = await connection.fetch(
            "select source_key from jobs group by source_bucket, source_key, source_etag having count(*) > 1"
        )
        assert twice == [], "one job per source"
        assert await connection.fetchval("select count(*) from jobs where source_key = $1", key) == 1
        # (webhooks still pending from earlier jobs may retry meanwhile: that is their schedule)
        sent_again = await connection.fetchval(
            "select count(*) from webhook_deliveries where attempted_at >= $1 and webhook_id = any($2)",
            replay_started, delivered,
        )  # fmt: skip
        assert sent_again == 0, "no delivered webhook is sent twice"
    finally:
        await connection.close()
    await _assert_one_good_output(settings, await wait_for_job(settings, key=key), 30, tmp_path)


async def test_a_poison_message_on_each_pipeline_topic_fails_its_job_and_the_pipeline_keeps_going(
    fresh_pipeline: dict[str, ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    topics = {
        "video.uploaded": "splitter",
        "chunk.ready": "gpu_interp",
        "chunk.interpolated": "muxer",
        "job.split": "muxer",
    }
    connection = await _db(settings)
    job_ids = {topic: str(uuid.uuid4()) for topic in topics}
    try:
        for topic, job_id in job_ids.items():
            await connection.execute(
                "insert into jobs (id, source, source_bucket, source_key, source_etag, status, params) "
                "values ($1::uuid, 'bucket', 'incoming', $2, 'e', 'interpolating', '{}')",
                job_id, f"faults/{unique}/{topic}",
            )  # fmt: skip
    finally:
        await connection.close()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for topic, job_id in job_ids.items():
        producer.produce(topic, b"\xc3\x01" + bytes(8) + b"not an event", key=job_id.encode())
    producer.flush(10)
    for topic, job_id in job_ids.items():
        job = await wait_for_job(settings, job_id=job_id, timeout_s=60)
        assert job["status"] == "failed"
        assert job["error_code"] == "E_UNKNOWN_SCHEMA", topic
        assert f"{topic}.dlq" in job["error_message"]
    key = f"faults/{unique}/after.mp4"
    await _run_job(settings, tmp_path, key, seconds=1)
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", "the consumers kept going"
