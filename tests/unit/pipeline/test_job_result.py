"""A completed job's stored result is derived from its `JobCompleted` event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from infiniteflow_common.events import JobCompleted, JobParams, JobSplit, QualityReport, VideoEncoding
from infiniteflow_common.output import OutputOptions
from services.muxer.report import job_result

AT = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
JOB = uuid.UUID("5f0c6c1e-8f7e-4a55-9d8e-2f4b1f1f0a01")
PLAN = JobSplit(
    job_id=JOB, chunk_count=2, source_frame_count=300, in_fps_num=30000, in_fps_den=1001, out_fps_num=60000,
    out_fps_den=1001, out_frame_count=600, scene_cuts=(0, 120), vfr_converted=False, split_at=AT,
    encoding=VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=18, preset="medium"), container="mkv",
)  # fmt: skip
QUALITY = QualityReport(
    psnr_db=40.0, chunks_checked=2, worst_chunk_index=1, worst_chunk_psnr_db=38.0, psnr_floor_db=30.0,
    chunks_below_floor=(),
)  # fmt: skip
EVENT = JobCompleted(
    job_id=JOB, bucket="incoming", key="a.mp4",
    params=JobParams(multiplier=2, target_fps=None, engine="flow", quality="fast", webhook_url=None),
    output_bucket="output", output_key="j/out.mkv", output_size_bytes=4096, in_fps_num=30000, in_fps_den=1001,
    out_fps_num=60000, out_fps_den=1001, in_frame_count=300, out_frame_count=600, duration_s=10.01,
    processing_seconds=20.0, completed_at=AT, quality=QUALITY,
)  # fmt: skip


def test_the_result_says_what_the_event_says_and_what_only_the_split_and_output_know() -> None:
    options = OutputOptions(container="mkv", container_reason="subtitles", container_losses=("attachments",))
    tracks = [{"codec_type": "audio", "codec_name": "aac"}]
    result = job_result(EVENT, PLAN, options=options, tracks=tracks, mux_seconds=1.23456, interpolate_s=4.5)
    assert (result.output_bucket, result.output_key, result.output_size_bytes) == (
        "output",
        "j/out.mkv",
        4096,
    )
    assert (result.in_fps, result.out_fps, result.in_frames, result.out_frames) == (
        "30000/1001", "60000/1001", 300, 600,
    )  # fmt: skip
    assert (result.duration_s, result.quality, result.timing) == (10.01, QUALITY, None)
    assert (result.scene_starts, result.container, result.container_losses) == (
        (0, 120),
        "mkv",
        ("attachments",),
    )
    assert result.video is not None
    assert (result.video.encoder, result.video.crf, result.video.bitrate) == ("libx264", 18, None)
    assert (result.mux_seconds, result.interpolate_s, result.tracks) == (1.235, 4.5, tuple(tracks))
