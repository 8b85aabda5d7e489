"""A server of the stack going away mid-job delays the job; it does not lose or double it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from infiniteflow_common.settings import REPO_ROOT, CommonSettings
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.faults import assert_one_good_output, claimed_by, run_job
from tests.support.jobs import wait_for_job
from tests.support.pipeline import ServiceProcess

pytestmark = WHOLE_PIPELINE


def stack(action: str, component: str) -> None:
    """Stop or start one server of the local stack."""
    subprocess.run(
        [str(REPO_ROOT / "infra" / "stack.sh"), action, component], check=True, capture_output=True
    )


@pytest.mark.parametrize(
    ("component", "down_s"),
    [
        ("minio", 30),
        # Once a stall: a synchronous offset commit issued as the broker went away never returned
        # (now commits are asynchronous); `make test-broker-restart` repeats just this case.
        pytest.param("kafka", 10, marks=pytest.mark.broker_restart),
        ("postgres", 3),
    ],
)
async def test_a_server_outage_mid_job_only_delays_it(
    fresh_pipeline: dict[str, ServiceProcess],
    settings: CommonSettings,
    tmp_path: Path,
    unique: str,
    component: str,
    down_s: float,
) -> None:
    key = f"faults/{unique}/{component}.mp4"
    await run_job(settings, tmp_path, key)
    await claimed_by(settings, key, "worker-")
    stack("stop", component)
    try:
        await asyncio.sleep(down_s)
    finally:
        stack("start", component)
    job = await wait_for_job(settings, key=key, timeout_s=240)
    await assert_one_good_output(settings, job, 90, tmp_path)
    assert all(service.alive() for service in fresh_pipeline.values()), "every service rode the outage out"
