"""Preemption at batch boundaries on the real stack: a job owed a worker, dropped while every worker is
inside another job's chunk, does not wait for the rest of those chunks. A worker pauses its chunk
between two batches, runs the other job's chunk, and resumes; the paused job still completes exactly
(issue 23). Which waiting jobs are owed a pause (fewer chunks running, a tenant with less of the fleet,
a higher priority) is specified on the real database in tests/integration/test_fair_dispatch.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import panning_clip, probe, video_stream
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


async def _chunks_started(settings: CommonSettings, key: str, count: int, timeout_s: float) -> None:
    await eventually(
        lambda: _chunks(settings, key),
        timeout_s,
        f"{count} chunks of {key} to start",
        until=lambda rows: sum(1 for row in rows if row["started_at"]) >= count,
        interval_s=0.3,
    )


def _log_lines(logdir: Path, message: str) -> list[dict[str, Any]]:
    lines = []
    for log in logdir.glob("gpu_interp-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{message}' in line:
                lines.append(json.loads(line))
    return lines


async def test_a_higher_priority_job_runs_in_a_pause_of_the_chunk_the_only_worker_is_on(
    settings: CommonSettings, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    long_key, small_key = f"preempt/{run}/long.mp4", f"preempt/{run}/small.mp4"
    # one 120-frame chunk at 1080p: the worker is inside it for many batches
    long_clip = panning_clip(tmp_path / "long.mp4", width=1920, height=1080, seconds=4)
    small_clip = panning_clip(tmp_path / "small.mp4", width=320, height=180, seconds=1)
    client = make_client(settings)
    logdir = tmp_path / "logs"
    with running_pipeline(logdir, workers=1, CHUNK_FRAMES="200", PREEMPT_CHECK_S="0.5"):
        client.fput_object(
            settings.incoming_bucket, long_key, str(long_clip.path), metadata={"engine": "flow"}
        )
        await _chunks_started(settings, long_key, count=1, timeout_s=180)
        client.fput_object(
            settings.incoming_bucket,
            small_key,
            str(small_clip.path),
            metadata={"engine": "flow", "priority": "10"},
        )
        small = await wait_for_job(settings, key=small_key, timeout_s=300)
        long = await wait_for_job(settings, key=long_key, timeout_s=600)

    assert (small["status"], long["status"]) == ("completed", "completed"), (small, long)
    (long_chunk,) = await _chunks(settings, long_key)
    assert small["completed_at"] < long_chunk["finished_at"], "the small job waited for the long chunk"
    paused = _log_lines(logdir, "chunk paused")
    resumed = _log_lines(logdir, "chunk resumed")
    assert [line["preempting_job_id"] for line in paused] == [str(small["id"])], paused
    assert [line["job_id"] for line in paused + resumed] == [str(long["id"])] * 2, resumed
    assert resumed[0]["paused_s"] > 0
    out = tmp_path / "long-out.mp4"
    client.fget_object(long["output_bucket"], long["output_key"], str(out))
    frames = int(video_stream(probe(out))["nb_read_frames"])
    assert frames == 2 * long_clip.frames, "the paused chunk lost or repeated frames"
