"""A worker plans each chunk's memory before decoding it, within its budget (WORKER_MEMORY_BYTES).

One worker with a small budget (2.5 GiB for its process and its encoder together) and 4 pairs per
call: a 1080p rife chunk, whose configured settings would take several GiB, runs at lighter settings
that fit and stays under the budget; an 8K chunk, which fits at no settings even in the smallest
tile (its encoder and frame-sized buffers alone are over 2.5 GiB beside the worker), fails its job at
once with E_CHUNK_TOO_LARGE_FOR_MEMORY, before anything is decoded, and the worker lives on. An 8K
chunk that fits in tiles: tests/e2e/test_memory_tiled.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import panning_clip
from tests.support.e2e import WHOLE_PIPELINE, drop_8k_rife_clip
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, running_pipeline, worker_lines

pytestmark = WHOLE_PIPELINE

BUDGET = int(2.5 * (1 << 30))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """The five services, one worker with a 2.5 GiB memory budget and batches of 4 pairs."""
    logs = tmp_path_factory.mktemp("service-logs")
    with running_pipeline(logs, workers=1, WORKER_MEMORY_BYTES=str(BUDGET), BATCH_SIZE="4") as services:
        yield services
    print(f"service logs: {logs}")


async def _chunk_rows(settings: CommonSettings, job_id: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        return list(
            await connection.fetch(
                "select scale, batch_size, oom_retries from chunks where job_id = $1", job_id
            )
        )
    finally:
        await connection.close()


async def test_a_large_frame_chunk_runs_at_a_lighter_plan_that_keeps_its_peak_under_the_budget(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    clip = panning_clip(
        workdir / "pan.mp4", width=1920, height=1080, rate=Fraction(6), seconds=1, audio=False
    )
    key = f"e2e/{unique}/hd.mp4"
    make_client(settings).fput_object(
        settings.incoming_bucket, key, str(clip.path),
        metadata={"multiplier": "2", "engine": "rife", "model": "hdv3"},
    )  # fmt: skip
    job = await wait_for_job(settings, key=key, timeout_s=600)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    rows = await _chunk_rows(settings, job["id"])
    assert rows
    assert all(r["oom_retries"] == 0 for r in rows), "planned, not discovered"
    assert all((r["scale"], r["batch_size"]) != (1.0, 4) for r in rows), "lighter than configured"
    planned = worker_lines(pipeline, "chunk planned lighter to fit the worker's memory", str(job["id"]))
    assert planned
    assert all(p["memory_estimate_bytes"] <= BUDGET for p in planned)
    done = worker_lines(pipeline, "chunk interpolated", str(job["id"]))
    assert len(done) == len(rows)
    for line in done:
        assert line["memory_budget_bytes"] == BUDGET
        assert 0 < line["peak_rss_bytes"] < BUDGET, "the chunk never got near the limit"
        assert line["memory_estimate_bytes"] <= BUDGET


async def test_an_8k_chunk_that_fits_no_plan_fails_at_once_with_its_code(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    key = drop_8k_rife_clip(settings, workdir, unique)
    job = await wait_for_job(settings, key=key, timeout_s=300)
    assert (job["status"], job["error_code"]) == ("failed", "E_CHUNK_TOO_LARGE_FOR_MEMORY")
    assert "7680×4320" in job["error_message"]
    assert "1024-pixel tiles" in job["error_message"], "even the smallest tile was tried"
    assert "WORKER_MEMORY_BYTES" in job["error_message"]
    refused = worker_lines(pipeline, "chunk cannot fit this worker's memory", str(job["id"]))
    assert refused
    assert refused[0]["memory_estimate_bytes"] > BUDGET
    assert refused[0]["tile"] == 1024
    assert worker_lines(pipeline, "chunk interpolated", str(job["id"])) == []
    [worker] = [s for s in pipeline if s.name.startswith("gpu_interp")]
    assert worker.alive(), "the worker refused the chunk; it was not killed by it"
