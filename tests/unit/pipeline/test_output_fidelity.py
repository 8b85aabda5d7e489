"""The output keeps what the source is: every codec through the whole data path, seams exact (issue 22).

Each test makes its source with FFmpeg, then runs the worker's and the muxer's own code on it: the
source's frames (each written twice, once as the decoded frame and once as RGB, as a ×2 job writes
copies and interpolated frames) into two `ChunkEncoder` chunks, `concatenate`, then `remux_command`
with the source's audio, and reads the output back with ffprobe.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from infiniteflow_common.events import JobSplit, VideoEncoding
from infiniteflow_common.output import OutputOptions, available_encoders, for_source
from infiniteflow_common.streams import Container
from services.gpu_interp.media_io import ChunkEncoder
from services.muxer.assemble import output_stamps, probe_streams, remux_command, run_ffmpeg
from services.muxer.concat import concatenate
from tests.fixtures.media import run

pytestmark = pytest.mark.ffmpeg

FAST = {"libx264": "veryfast", "libx265": "ultrafast", "libsvtav1": "12", "libaom-av1": "8"}
"""Presets that keep the tests quick (x264 veryfast and x265 ultrafast still use B-frames)."""


def _split(in_rate: Fraction, source_frames: int) -> JobSplit:
    return JobSplit(
        job_id=uuid.UUID(int=22), chunk_count=2, source_frame_count=source_frames,
        in_fps_num=in_rate.numerator, in_fps_den=in_rate.denominator, out_fps_num=(2 * in_rate).numerator,
        out_fps_den=(2 * in_rate).denominator, out_frame_count=2 * source_frames, scene_cuts=(),
        vfr_converted=False, split_at=datetime(2026, 12, 3, tzinfo=UTC),
    )  # fmt: skip


def _through_pipeline(source: Path, encoder: str, output: Path, container: Container = "mp4") -> Path:
    """The source ×2 (each frame twice) through chunk encode, concatenation and the final remux."""
    with av.open(str(source)) as opened:
        stream = opened.streams.video[0]
        frames = list(opened.decode(stream))
        assert stream.average_rate is not None
        rate = Fraction(stream.average_rate)
        context = stream.codec_context
        width, height, pix_fmt = context.width, context.height, context.pix_fmt
    encoding = VideoEncoding(encoder=encoder, pix_fmt=pix_fmt, preset=FAST[encoder])
    half = len(frames) // 2
    paths = [output.with_suffix(".0.mkv"), output.with_suffix(".1.mkv")]
    for path, part in zip(paths, (frames[:half], frames[half:]), strict=True):
        with ChunkEncoder(path, encoding, width=width, height=height, rate=2 * rate, timeout_s=120) as chunk:
            for frame in part:
                chunk.write(frame)
                chunk.write_rgb(frame.to_ndarray(format="rgb24"))
    time_base, stamps = output_stamps(_split(rate, len(frames)))
    video = output.with_suffix(".video.mp4")
    concatenate(paths, [2 * half, 2 * (len(frames) - half)], 2 * rate, video, time_base, stamps)
    command = remux_command(
        video, source, output, probe_streams(source), timescale=time_base.denominator, container=container
    )
    run_ffmpeg(command, timeout_s=120)
    return output


def _ffprobe(path: Path, *options: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", *options, "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    probed: dict[str, Any] = json.loads(out.stdout)
    return probed


def _rgb(path: Path) -> np.ndarray[Any, Any]:
    with av.open(str(path)) as opened:
        return np.stack([f.to_ndarray(format="rgb24") for f in opened.decode(opened.streams.video[0])])


def _assert_exact_seams(source: Path, output: Path) -> None:
    """Output frames 2k and 2k + 1 are source frame k, at k / (2 · rate), and the stream decodes cleanly."""
    decoded = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(output), "-f", "null", "-"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (decoded.returncode, decoded.stderr) == (0, "")
    original, result = _rgb(source), _rgb(output)
    assert len(result) == 2 * len(original)
    for index, frame in enumerate(result):
        errors = np.abs(original.astype(int) - frame.astype(int)).mean(axis=(1, 2, 3))
        assert int(np.argmin(errors)) == index // 2, f"output frame {index} out of place"
    video = _ffprobe(output, "-select_streams", "v:0", "-show_entries", "packet=pts_time")["packets"]
    rate = 2 * Fraction(_ffprobe(source, "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate")[
        "streams"][0]["r_frame_rate"])  # fmt: skip
    times = sorted(Fraction(p["pts_time"]) for p in video)
    tick = Fraction(1, 1000) if output.suffix == ".mkv" else Fraction(0)
    assert all(abs(t - times[0] - k / rate) <= tick for k, t in enumerate(times))


def _source(path: Path, *video: str, seconds: float = 1.0, size: str = "160x96") -> Path:
    run(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", *video, "-c:a", "aac", str(path),
    )  # fmt: skip
    return path


ENCODERS = [
    ("libx264", "mp4"), ("libx264", "mov"), ("libx264", "mkv"),
    ("libx265", "mp4"), ("libx265", "mov"), ("libx265", "mkv"),
    ("libsvtav1", "mp4"), ("libsvtav1", "mkv"), ("libaom-av1", "mp4"), ("libaom-av1", "mkv"),
]  # fmt: skip


@pytest.mark.parametrize(("encoder", "container"), ENCODERS)
def test_every_output_codec_joins_and_remuxes_with_exact_seams(
    tmp_path: Path, encoder: str, container: Container
) -> None:
    source = _source(tmp_path / "source.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    output = _through_pipeline(source, encoder, tmp_path / f"out.{container}", container)
    _assert_exact_seams(source, output)


SOURCES = {
    "h264": ("source.mp4", ["-c:v", "libx264"]),
    "hevc": ("source.mkv", ["-c:v", "libx265", "-x265-params", "log-level=error"]),
    "av1": ("source.webm", ["-c:v", "libaom-av1", "-cpu-used", "8", "-c:a", "libopus"]),
}


@pytest.mark.parametrize("codec", sorted(SOURCES))
def test_codec_source_goes_end_to_end_for_every_source_codec_it_takes(tmp_path: Path, codec: str) -> None:
    name, video = SOURCES[codec]
    source = tmp_path / name
    run(
        "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=1", "-f", "lavfi", "-i",
        "sine=frequency=440:duration=1", *video, str(source),
    )  # fmt: skip
    resolved = for_source(OutputOptions(codec="source"), codec, available_encoders())
    assert resolved.encoder is not None
    output = _through_pipeline(source, resolved.encoder, tmp_path / "out.mp4")
    _assert_exact_seams(source, output)
    streams = _ffprobe(output, "-show_entries", "stream=codec_name")["streams"]
    assert streams[0]["codec_name"] == codec
