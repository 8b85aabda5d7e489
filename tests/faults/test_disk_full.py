"""A scratch disk that fills up mid-job fails the job cleanly: a clear code, nothing half-written, no crash."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.faults import FAULT_SETTINGS, run_job
from tests.support.jobs import wait_for_job
from tests.support.pipeline import running_pipeline

pytestmark = WHOLE_PIPELINE


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: room for the upload and a worker's encoded chunk, not for the muxer's output."""
    mountpoint = tmp_path / "scratch"
    mountpoint.mkdir()
    assert os.geteuid() == 0, "mounting a small tmpfs needs root"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True, check=False
    )
    assert mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}"
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_a_full_scratch_disk_fails_the_job_with_a_clear_code_and_leaves_nothing_behind(
    settings: CommonSettings, tmp_path: Path, unique: str, small_disk: Path
) -> None:
    key = f"faults/{unique}/disk-full.mp4"
    with running_pipeline(tmp_path / "logs", **FAULT_SETTINGS, SCRATCH_DIR=str(small_disk)) as services:
        # 640×360, 3 s: a 0.27 MB upload whose ×2 output, with the chunks it is made of, exceeds 1 MiB
        await run_job(settings, tmp_path, key, size=(640, 360))
        job = await wait_for_job(settings, key=key, timeout_s=180)

        assert job["status"] == "failed"
        assert job["error_code"] == "E_SCRATCH_FULL"
        assert "scratch disk is full" in job["error_message"]
        assert all(service.alive() for service in services), "no service crashed"
    outputs = list(make_client(settings).list_objects(settings.output_bucket, prefix=f"{job['id']}/"))
    assert outputs == [], "no output, not even a partial one"
    assert _files(small_disk) == [], "scratch files of the failed work were removed"


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]
