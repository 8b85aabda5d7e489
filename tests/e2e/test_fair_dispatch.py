"""Many jobs at once on the real stack: a job dropped behind a long one is served at the next free
worker, its chunks taking turns with the long job's on the same worker, instead of waiting behind the
long job's whole queue on the `chunk.ready` partitions (issue 23).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import panning_clip
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.jobs import wait_for_job
from tests.support.pipeline import running_pipeline
from tests.support.waiting import eventually

pytestmark = WHOLE_PIPELINE


async def _chunks(settings: CommonSettings, key: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "select c.chunk_index, c.started_at, c.finished_at, c.worker from chunks c"
            " join jobs j on j.id = c.job_id where j.source_key = $1 order by c.chunk_index",
            key,
        )
    finally:
        await connection.close()
    return [dict(row) for row in rows]


async def _first_chunk_started(settings: CommonSettings, key: str, timeout_s: float) -> None:
    await eventually(
        lambda: _chunks(settings, key),
        timeout_s,
        f"a chunk of {key} to start",
        until=lambda rows: any(row["started_at"] for row in rows),
        interval_s=0.3,
    )


async def test_a_small_job_dropped_behind_a_long_one_takes_turns_with_it_on_the_one_worker(
    settings: CommonSettings, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    long_key, small_key = f"fair/{run}/long.mp4", f"fair/{run}/small.mp4"
    long_clip = panning_clip(tmp_path / "long.mp4", width=640, height=360, seconds=10)  # 30 chunks
    small_clip = panning_clip(tmp_path / "small.mp4", width=320, height=180, seconds=1)  # 3 chunks
    client = make_client(settings)
    with running_pipeline(tmp_path / "logs", workers=1, CHUNK_FRAMES="10"):
        client.fput_object(
            settings.incoming_bucket, long_key, str(long_clip.path), metadata={"engine": "flow"}
        )
        await _first_chunk_started(settings, long_key, timeout_s=120)
        client.fput_object(
            settings.incoming_bucket, small_key, str(small_clip.path), metadata={"engine": "flow"}
        )
        small = await wait_for_job(settings, key=small_key, timeout_s=300)
        long = await wait_for_job(settings, key=long_key, timeout_s=300)

    assert (small["status"], long["status"]) == ("completed", "completed")
    small_chunks = await _chunks(settings, small_key)
    long_chunks = await _chunks(settings, long_key)
    timeline = sorted(
        [("small", c["chunk_index"], c["started_at"].time()) for c in small_chunks]
        + [("long", c["chunk_index"], c["started_at"].time()) for c in long_chunks],
        key=lambda entry: entry[2],
    )

    assert small["completed_at"] < long["completed_at"], ("the small job waited for the long one", timeline)
    first, last = min(c["started_at"] for c in small_chunks), max(c["started_at"] for c in small_chunks)
    long_meanwhile = [c for c in long_chunks if first < c["started_at"] < last]
    # one worker, two jobs: they take turns, so the long job starts at most one chunk per small one
    assert len(long_meanwhile) <= len(small_chunks), timeline
    left_behind = [c for c in long_chunks if c["started_at"] > last]
    assert left_behind, ("the long job still had chunks to do when the small one was served", timeline)
