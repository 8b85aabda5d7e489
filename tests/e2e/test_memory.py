"""A worker that runs out of memory retries the chunk lighter and the job still completes.

The worker here pretends its memory ends at 100 000 pixels per engine call (SIMULATED_MEMORY_PIXELS):
4 pairs of 320×180 frames (230 400 at flow scale 1) do not fit, at scale 0.5 (57 600) they do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import panning_clip
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, running_pipeline

pytestmark = WHOLE_PIPELINE


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """The five services, one worker with a pretend memory budget and batches of 4 pairs."""
    logs = tmp_path_factory.mktemp("service-logs")
    with running_pipeline(logs, workers=1, SIMULATED_MEMORY_PIXELS="100000", BATCH_SIZE="4") as services:
        yield services
    print(f"service logs: {logs}")


async def test_a_chunk_out_of_memory_is_retried_at_a_lower_scale_and_records_it(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    clip = panning_clip(workdir / "pan.mp4", seconds=1, audio=False)
    key = f"e2e/{unique}/pan.mp4"
    make_client(settings).fput_object(
        settings.incoming_bucket, key, str(clip.path), metadata={"multiplier": "2", "engine": "flow"}
    )
    job = await wait_for_job(settings, key=key)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    connection = await asyncpg.connect(settings.database_url.get_secret_value().replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "select scale, batch_size, oom_retries from chunks where job_id = $1", job["id"]
        )
    finally:
        await connection.close()
    assert rows
    assert {(r["scale"], r["batch_size"], r["oom_retries"]) for r in rows} == {(0.5, 4, 1)}
    [worker] = [s for s in pipeline if s.name.startswith("gpu_interp")]
    log = worker.log.read_text(errors="replace")
    assert "chunk ran out of memory; retrying lighter" in log
    assert '"next_scale": 0.5' in log
