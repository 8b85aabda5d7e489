"""Faults the pipeline survives: the job completes with exactly one output, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infiniteflow_common.settings import CommonSettings
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.faults import FAULT_SETTINGS, assert_one_good_output, claimed_by, run_job
from tests.support.jobs import connect, wait_for_job
from tests.support.pipeline import ServiceProcess, running_pipeline
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE


async def test_a_worker_killed_mid_chunk_loses_nothing(
    fresh_pipeline: dict[str, ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    key = f"faults/{unique}/kill.mp4"
    _clip, _ = await run_job(settings, tmp_path, key)
    await claimed_by(settings, key, "worker-1")
    fresh_pipeline["gpu_interp-1"].process.send_signal(signal.SIGKILL)
    job = await wait_for_job(settings, key=key, timeout_s=180)
    await assert_one_good_output(settings, job, 3 * 30, tmp_path)
    connection = await connect(settings)
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
    _clip, _ = await run_job(settings, tmp_path, key)
    await claimed_by(settings, key, "worker-1")
    stopped = fresh_pipeline["gpu_interp-1"]
    stopped.process.send_signal(signal.SIGSTOP)  # past the session timeout and its lease
    try:
        job = await wait_for_job(settings, key=key, timeout_s=180)
    finally:
        stopped.process.send_signal(signal.SIGCONT)
    await eventually(
        lambda: "E_LEASE_LOST" in stopped.log.read_text(), 30, "E_LEASE_LOST in its log", fail=False
    )
    assert "E_LEASE_LOST" in stopped.log.read_text(), "the late worker noticed it lost the chunk"
    await asyncio.sleep(2)  # anything it would wrongly publish now has had time to land
    await assert_one_good_output(settings, job, 3 * 30, tmp_path)


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
        await run_job(settings, tmp_path, key, seconds=1)
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
    connection = await connect(settings)
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
    connection = await connect(settings)
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
    await assert_one_good_output(settings, await wait_for_job(settings, key=key), 30, tmp_path)


async def test_a_poison_message_on_each_pipeline_topic_fails_its_job_and_the_pipeline_keeps_going(
    fresh_pipeline: dict[str, ServiceProcess], settings: CommonSettings, tmp_path: Path, unique: str
) -> None:
    topics = {
        "video.uploaded": "splitter",
        "chunk.ready": "gpu_interp",
        "chunk.interpolated": "muxer",
        "job.split": "muxer",
    }
    connection = await connect(settings)
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
    await run_job(settings, tmp_path, key, seconds=1)
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", "the consumers kept going"
