"""What the end-to-end tests share: the services they need, and how a source goes in and an output comes out."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from infiniteflow_common.settings import CommonSettings
from infiniteflow_common.storage import make_client
from tests.support.clips import panning_clip

# A test that runs the five services needs the real Kafka, MinIO, PostgreSQL and FFmpeg, and is slow.
WHOLE_PIPELINE = [
    pytest.mark.kafka,
    pytest.mark.minio,
    pytest.mark.postgres,
    pytest.mark.ffmpeg,
    pytest.mark.slow,
]


def drop_source(settings: CommonSettings, path: Path, key: str, **metadata: str) -> None:
    """Put a source into the incoming bucket under `key`, its job options as object metadata."""
    options: dict[str, str | list[str] | tuple[str]] = {**metadata}
    make_client(settings).fput_object(settings.incoming_bucket, key, str(path), metadata=options)


def download_output(settings: CommonSettings, job: dict[str, Any], dest: Path) -> Path:
    """The job's output, copied to `dest`."""
    make_client(settings).fget_object(job["output_bucket"], job["output_key"], str(dest))
    return dest


def drop_8k_rife_clip(settings: CommonSettings, workdir: Path, unique: str) -> str:
    """Drop a two-frame 7680×4320 pan for RIFE ×2 (model chosen by rule); returns its key."""
    clip = panning_clip(workdir / "8k.mp4", width=7680, height=4320, rate=Fraction(2), seconds=1, audio=False)
    key = f"e2e/{unique}/8k.mp4"
    drop_source(settings, clip.path, key, multiplier="2", engine="rife", model="auto")
    return key
