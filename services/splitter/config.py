"""Splitter settings (environment, with infra/local.env defaults)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field

from infiniteflow_common.settings import CommonSettings


class SplitterSettings(CommonSettings):
    """How sources are cut into chunks."""

    # Source frames per chunk (each chunk's own frames; inside a scene one more is shared). Short chunks
    # spread a job over many workers and keep each chunk's work well inside max.poll.interval.ms.
    chunk_frames: int = Field(default=48, ge=2)
    # PySceneDetect ContentDetector threshold and the shortest scene it may report, in frames.
    scene_threshold: float = Field(default=27.0, gt=0)
    scene_min_frames: int = Field(default=8, ge=1)
    # Width of the frames the scene detector sees (downscaled: faster, and noise-robust).
    scene_width: int = Field(default=256, ge=32)
    # With the dedupe option, a frame whose small luma image differs from the last distinct one by
    # less than this mean absolute difference (0–255) is a duplicate and is skipped.
    dedupe_threshold: float = Field(default=1.0, ge=0)
    scratch_dir: Path = Path(tempfile.gettempdir()) / "infiniteflow" / "splitter"
    metrics_port: int | None = 9102
