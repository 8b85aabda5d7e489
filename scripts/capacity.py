"""Measure what the capacity model in docs/capacity.md is built from: one job, run with 1, 2, 3… workers.

For each worker count the services are (re)started with that many gpu_interp workers and the same clip
is dropped in the bucket. Per run it reports the end-to-end time, the speed-up over one worker, the
engine's throughput, the per-chunk overhead outside the engine (download, decode, encode, upload, lease
and Kafka hops), and what one job costs the stack: Kafka records and bytes, object-store bytes written,
PostgreSQL transactions and row changes (read from the servers' own counters, so run it on a quiet stack).

Usage: .venv/bin/python scripts/capacity.py [--size 1280x720] [--seconds 4] [--engine flow] [--workers 1 2 3]
Needs `make up`. Stops services started by `infiniteflow services up` and leaves none running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
from confluent_kafka import Consumer, TopicPartition

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from infiniteflow_common.topics import topic_specs
from services.supervisor import start_all, stop_all, wait_ready

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_latency import union_seconds


@dataclass
class Run:
    """One job's figures with `workers` workers."""

    workers: int
    status: str
    end_to_end_s: float
    chunks: int
    frames_out: int
    engine_s: float
    chunk_wall_s: float
    overhead_per_chunk_s: float
    kafka_records: int
    object_bytes_written: int
    pg_transactions: int
    pg_rows_changed: int


def topic_ends(consumer: Consumer) -> dict[str, int]:
    """Sum of end offsets per topic (records ever written), for every pipeline topic and DLQ."""
    ends: dict[str, int] = {}
    names = [n for spec in topic_specs().values() for n in (spec.name, spec.dlq)]
    metadata = consumer.list_topics(timeout=10).topics
    for name in names:
        if name not in metadata:
            continue
        ends[name] = sum(
            consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in metadata[name].partitions
        )
    return ends


async def pg_counters(connection: asyncpg.Connection) -> tuple[int, int]:
    """(transactions committed, rows inserted + updated + deleted) of the database so far."""
    row = await connection.fetchrow(
        "select xact_commit, tup_inserted + tup_updated + tup_deleted as rows "
        "from pg_stat_database where datname = current_database()"
    )
    assert row is not None
    return int(row["xact_commit"]), int(row["rows"])


def job_bytes(settings: CommonSettings, job_id: str, source_size: int) -> int:
    """Bytes the job wrote to the object store: its upload, chunks, interpolated chunks and output."""
    client = make_client(settings)
    total = source_size
    for bucket in (settings.work_bucket, settings.output_bucket):
        total += sum(o.size or 0 for o in client.list_objects(bucket, prefix=f"{job_id}/", recursive=True))
    return total


FINAL = ("completed", "completed_with_warnings", "failed", "cancelled")


def start_services(workers: int, env: dict[str, str] | None = None, root: Path | None = None) -> None:
    """Stop whatever runs, then start the services with `workers` workers and wait until they are ready.

    `root` runs another checkout's services (e.g. a `git worktree` of an older commit, with `.venv` and
    `.run` linked to this one's, so its pid files are the ones `stop_all` reads).
    """
    stop_all()
    if root is None:
        wait_ready(list(start_all(workers=workers, env=env)))
        return
    code = (
        "import json, sys; from services.supervisor import start_all, wait_ready; "
        "wait_ready(list(start_all(workers=int(sys.argv[1]), env=json.loads(sys.argv[2]))))"
    )
    subprocess.run([sys.executable, "-c", code, str(workers), json.dumps(env or {})], cwd=root, check=True)


async def connect(settings: CommonSettings) -> asyncpg.Connection:
    """A plain asyncpg connection to the pipeline's database."""
    return await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))


def drop_clip(
    settings: CommonSettings,
    clip: Path,
    metadata: dict[str, str | list[str] | tuple[str]],
    *,
    prefix: str = "capacity/",
) -> tuple[str, float]:
    """Put `clip` in the incoming bucket under `prefix` (a new job); returns (object key, upload time)."""
    key = f"{prefix}{uuid.uuid4().hex[:8]}/clip.mp4"
    started = time.time()
    make_client(settings).fput_object(settings.incoming_bucket, key, str(clip), metadata=metadata)
    return key, started


async def wait_for_job(
    connection: asyncpg.Connection,
    key: str,
    started: float,
    *,
    timeout_s: float = 3600,
    poll: Callable[[asyncpg.Record | None], None] | None = None,
) -> asyncpg.Record:
    """Wait for the job of the object `key` (dropped at `started`) to end; returns its row.

    `poll` is called with the job row (None before ingest created it) about every 0.2 s while it runs.
    """
    while True:
        job = await connection.fetchrow("select * from jobs where source_key = $1", key)
        if poll is not None:
            await asyncio.to_thread(poll, job)
        if job and job["status"] in FINAL:
            break
        if time.time() - started > timeout_s:
            raise TimeoutError(
                f"job of {key} not done after {timeout_s:.0f} s (status {job and job['status']})"
            )
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # the webhook and last commits land
    job = await connection.fetchrow("select * from jobs where source_key = $1", key)
    assert job is not None
    return job


async def submit_and_wait(
    settings: CommonSettings,
    connection: asyncpg.Connection,
    clip: Path,
    metadata: dict[str, str | list[str] | tuple[str]],
    *,
    timeout_s: float = 3600,
    poll: Callable[[asyncpg.Record | None], None] | None = None,
) -> tuple[asyncpg.Record, float]:
    """Drop `clip` in the incoming bucket and wait for its job to end; returns (job row, upload time)."""
    key, started = drop_clip(settings, clip, metadata)
    job = await wait_for_job(connection, key, started, timeout_s=timeout_s, poll=poll)
    return job, started


async def one_run(
    settings: CommonSettings, clip: Path, size: int, workers: int, engine: str, threads: int | None
) -> Run:
    start_services(workers, {"ENGINE_THREADS": str(threads)} if threads else None)
    await asyncio.sleep(5)  # let the group settle: every worker assigned before the clock starts
    kafka = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"capacity-{uuid.uuid4()}"})
    connection = await connect(settings)
    try:
        ends_before = topic_ends(kafka)
        pg_before = await pg_counters(connection)
        job, started = await submit_and_wait(
            settings, connection, clip, {"multiplier": "2", "engine": engine}
        )
        chunks = await connection.fetch("select * from chunks where job_id = $1", job["id"])
        pg_after = await pg_counters(connection)
        ends_after = topic_ends(kafka)
    finally:
        await connection.close()
        kafka.close()
    finished = job["completed_at"].timestamp() if job["completed_at"] else time.time()
    end_to_end = finished - started
    done = [c for c in chunks if c["finished_at"] and c["started_at"]]
    engine_s = sum(c["interp_seconds"] or 0.0 for c in done)
    held_s = sum((c["finished_at"] - c["started_at"]).total_seconds() for c in done)
    records = sum(ends_after.get(t, 0) - ends_before.get(t, 0) for t in ends_after)
    return Run(
        workers=workers,
        status=str(job["status"]),
        end_to_end_s=round(end_to_end, 2),
        chunks=len(chunks),
        frames_out=sum(c["frames_out"] or 0 for c in chunks),
        engine_s=round(engine_s, 2),
        chunk_wall_s=round(union_seconds([(c["started_at"], c["finished_at"]) for c in done]), 2),
        overhead_per_chunk_s=round((held_s - engine_s) / max(len(done), 1), 3),
        kafka_records=records,
        object_bytes_written=job_bytes(settings, str(job["id"]), size),
        pg_transactions=pg_after[0] - pg_before[0],
        pg_rows_changed=pg_after[1] - pg_before[1],
    )


def make_clip(size: str, seconds: float, into: Path | None = None) -> Path:
    """A panning clip with detail everywhere (motion for the engine), with audio.

    With `into`, the clip is kept there and reused by later calls with the same size and length.
    """
    clip = (into or Path(tempfile.mkdtemp())) / f"testsrc2-{size}-{seconds:g}s.mp4"
    if clip.exists():
        return clip
    partial = clip.with_suffix(".partial.mp4")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size={size}:rate=30:duration={seconds}", "-f", "lavfi", "-i", f"sine=duration={seconds}",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(partial)],
        check=True,
    )  # fmt: skip
    return partial.rename(clip)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="flow")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--json", type=Path, help="also write the runs here")
    parser.add_argument("--engine-threads", type=int, help="CPU threads per worker's engine (default: all)")
    args = parser.parse_args()
    settings = CommonSettings()
    clip = make_clip(args.size, args.seconds)
    runs: list[Run] = []
    try:
        for workers in args.workers:
            runs.append(
                await one_run(settings, clip, clip.stat().st_size, workers, args.engine, args.engine_threads)
            )
            print(json.dumps(asdict(runs[-1])), flush=True)
    finally:
        stop_all()
    base = runs[0].end_to_end_s
    threads = f", {args.engine_threads} engine thread(s) per worker" if args.engine_threads else ""
    print(f"\n{args.engine}, {args.size}, {args.seconds:g} s at 30 fps, ×2{threads}\n")
    print("| workers | end to end | speed-up | chunks | engine time | engine frames/s | overhead per chunk |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        fps = run.frames_out / run.chunk_wall_s if run.chunk_wall_s else 0.0
        print(
            f"| {run.workers} | {run.end_to_end_s:.1f} s | {base / run.end_to_end_s:.2f}× | {run.chunks} | "
            f"{run.engine_s:.1f} s | {fps:.1f} | {run.overhead_per_chunk_s:.2f} s |"
        )
    last = runs[-1]
    print(
        f"\nper job: {last.kafka_records} Kafka records, {last.object_bytes_written / 1e6:.1f} MB written to "
        f"the object store, {last.pg_transactions} PostgreSQL transactions, {last.pg_rows_changed} rows changed"
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
