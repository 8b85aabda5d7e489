"""An 8K RIFE chunk runs in tiles within the default budget of two local workers (issue 20 item 1).

Two workers with their default budgets (0.8 × the machine's memory ÷ 2) and 4 pairs per call: a
two-frame 8K ×2 upload, which at no whole-frame settings fits a worker (16–21 GiB estimated at flow
scale 0.25 with one pair per call), is planned at the lowest scale, one pair per call, in tiles, and
completes with the worker's measured peak under its budget and under the plan's estimate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infiniteflow_common.settings import CommonSettings
from tests.support.e2e import WHOLE_PIPELINE, drop_8k_rife_clip
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess, running_pipeline, worker_lines

pytestmark = WHOLE_PIPELINE


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceProcess]]:
    """The five services, two workers at their default memory budgets, batches of 4 pairs."""
    logs = tmp_path_factory.mktemp("service-logs")
    with running_pipeline(logs, workers=2, BATCH_SIZE="4") as services:
        yield services
    print(f"service logs: {logs}")


async def test_an_8k_rife_chunk_runs_in_tiles_and_stays_under_the_default_budget_of_two_workers(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path, unique: str
) -> None:
    key = drop_8k_rife_clip(settings, workdir, unique)
    job = await wait_for_job(settings, key=key, timeout_s=1200)
    assert job["status"] == "completed", (job["error_code"], job["error_message"])
    [planned] = worker_lines(pipeline, "chunk planned lighter to fit the worker's memory", str(job["id"]))
    assert (planned["scale"], planned["batch_size"]) == (0.25, 1)
    assert planned["tile"] is not None
    [done] = worker_lines(pipeline, "chunk interpolated", str(job["id"]))
    print("8K tiled chunk:", {k: done.get(k) for k in (
        "tile", "scale", "batch_size", "seconds", "memory_estimate_bytes", "peak_rss_bytes", "memory_budget_bytes"
    )})  # fmt: skip
    assert done["tile"] == planned["tile"]
    assert done["oom_retries"] == 0
    assert done["memory_estimate_bytes"] <= done["memory_budget_bytes"]
    assert 0 < done["peak_rss_bytes"] <= done["memory_estimate_bytes"], "measured ≤ estimate"
    assert all(s.alive() for s in pipeline if s.name.startswith("gpu_interp")), "no worker was killed"
