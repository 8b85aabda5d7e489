"""Muxer settings (environment, with infra/local.env defaults)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field

from infiniteflow_common.settings import CommonSettings


class MuxerSettings(CommonSettings):
    """How a finished job is assembled and encoded."""

    # One muxer assembles a job: its claim lasts this long, renewed every third of it while it works;
    # a crashed muxer's job is taken over once its claim expires.
    assembly_lease_s: float = Field(default=60.0, gt=1)
    # A checked chunk whose self-check PSNR is below this floor (dB) makes the job
    # completed_with_warnings and is named in its report.
    # The self-check re-creates frames across twice the motion the output has, so it reads low
    # (scripts/selfcheck_vs_truth.py); 20 dB there means visibly broken in-between frames, while plain
    # synthetic test patterns (testsrc2 at 160×96: 21.96 dB) pass.
    quality_psnr_floor: float = Field(default=20.0, ge=0)
    ffmpeg_timeout_s: float = Field(default=3600.0, gt=0)
    scratch_dir: Path = Path(tempfile.gettempdir()) / "infiniteflow" / "muxer"
    metrics_port: int | None = 9104
