"""A user submits a video from the command line, waits for it, and checks on it later."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from infiniteflow_common.settings import CommonSettings
from tests.support.clips import panning_clip
from tests.support.e2e import WHOLE_PIPELINE
from tests.support.pipeline import ServiceProcess

pytestmark = WHOLE_PIPELINE
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def infiniteflow(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `infiniteflow` command as a user would (no terminal: plain output)."""
    command = [sys.executable, "-c", "from services.cli import main; main()", *args]
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_submit_waits_with_progress_and_prints_the_download_url_then_status_shows_it(
    pipeline: list[ServiceProcess], settings: CommonSettings, workdir: Path
) -> None:
    clip = panning_clip(workdir / "cli clip.mp4", width=160, height=96, seconds=1)
    submitted = infiniteflow("submit", str(clip.path), "--multiplier", "2", "--engine", "flow", "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(rf"job ({UUID})", submitted.stdout)
    assert job_id, submitted.stdout
    assert "completed" in submitted.stdout
    url = submitted.stdout.strip().splitlines()[-1]
    assert url.startswith(settings.s3_endpoint), submitted.stdout
    assert httpx.get(url, timeout=30).content[4:8] == b"ftyp"  # an MP4 file

    shown = infiniteflow("status", job_id.group(1))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "completed (100 %)" in shown.stdout

    too_late = infiniteflow("cancel", job_id.group(1))
    assert too_late.returncode == 2, too_late.stdout
    assert "E_JOB_FINAL" in too_late.stdout


def test_cancel_stops_a_running_job_and_saying_it_again_changes_nothing(
    pipeline: list[ServiceProcess], workdir: Path
) -> None:
    clip = panning_clip(workdir / "long.mp4", width=320, height=180, seconds=4)
    submitted = infiniteflow("submit", str(clip.path), "--multiplier", "8", "--engine", "flow")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(rf"job ({UUID})", submitted.stdout)
    assert job_id, submitted.stdout

    cancelled = infiniteflow("cancel", job_id.group(1))
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert "cancelled" in cancelled.stdout
    again = infiniteflow("cancel", job_id.group(1))
    assert again.returncode == 0, again.stdout
    shown = infiniteflow("status", job_id.group(1))
    assert shown.returncode == 1, "a cancelled job's status exits 1, like a failed one"
    assert "cancelled" in shown.stdout
    unknown = infiniteflow("cancel", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 2
    assert "E_JOB_NOT_FOUND" in unknown.stdout


def test_submit_reports_options_the_api_refuses(pipeline: list[ServiceProcess], workdir: Path) -> None:
    clip = panning_clip(workdir / "bad.mp4", width=160, height=96, seconds=1, audio=False)
    refused = infiniteflow("submit", str(clip.path), "--multiplier", "3")
    assert refused.returncode == 2
    assert "E_PARAM" in refused.stdout


def test_status_of_an_unknown_job_says_so(pipeline: list[ServiceProcess]) -> None:
    shown = infiniteflow("status", "00000000-0000-0000-0000-000000000000")
    assert shown.returncode == 2
    assert "E_JOB_NOT_FOUND" in shown.stdout
