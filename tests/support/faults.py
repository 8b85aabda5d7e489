"""What the fault tests share: their pipeline settings, a job dropped in, and the one-good-output check."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from infiniteflow_common.avro import SchemaCatalog
from infiniteflow_common.errors import UnknownSchemaError
from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import panning_clip, probe, video_stream
from tests.support.jobs import connect
from tests.support.waiting import eventually

FAULT_SETTINGS = {
    "CHUNK_FRAMES": "10",
    # short leases so a takeover happens within seconds; the broker evicts a silent member after 10 s
    "LEASE_SECONDS": "6",
    "RETRY_BASE_DELAY_S": "0.2",
}


async def claimed_by(settings: CommonSettings, key: str, worker_prefix: str, timeout_s: float = 60) -> int:
    """Wait until a chunk of the job is being worked on by the worker; returns its index."""
    connection = await connect(settings)
    try:
        row = await eventually(
            lambda: connection.fetchrow(
                "select c.chunk_index from chunks c join jobs j on j.id = c.job_id "
                "where j.source_key = $1 and c.status = 'claimed' and c.worker like $2 limit 1",
                key,
                worker_prefix + "%",
            ),
            timeout_s,
            f"a chunk of {key} claimed by {worker_prefix}",
            interval_s=0.05,
        )
    finally:
        await connection.close()
    return int(row["chunk_index"])


def completed_events(settings: CommonSettings, job_id: str) -> int:
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


async def run_job(
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


async def assert_one_good_output(
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
    assert completed_events(settings, str(job["id"])) == 1, "exactly one job.completed"


async def chunk_rows(settings: CommonSettings, job_id: Any) -> list[Any]:
    connection = await connect(settings)
    try:
        return list(
            await connection.fetch(
                "select chunk_index, status, attempts, scale, batch_size from chunks where job_id = $1 "
                "order by chunk_index",
                job_id,
            )
        )
    finally:
        await connection.close()
