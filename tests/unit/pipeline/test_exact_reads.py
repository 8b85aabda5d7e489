"""A chunk's frames come out exactly as a full decode gives them, wherever the chunk starts, in every
container and codec users bring: the splitter's full pass names the keyframe each chunk's decode starts
at, and the worker's reader verifies it got there (DESIGN.md, "A chunk's range is read exactly").

The matrix crosses containers (MPEG-TS, M2TS, MP4 with and without an edit list, MOV, Matroska, WebM,
FLV, AVI), codecs (H.264, HEVC, VP9, AV1, MPEG-4 Part 2, MPEG-2, ProRes, DNxHD), closed and open GOPs,
B-frames, a first timestamp far from 0 and negative decode timestamps; every clip has a fixed GOP of 12
(as a camera writes it), so most chunks begin mid-GOP.
"""

from __future__ import annotations

import hashlib
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infiniteflow_common.events import SourceRange
from infiniteflow_common.media import decode_video
from services.gpu_interp.media_io import source_frames
from services.splitter.analysis import AnalysisSettings, analyse, decode_start
from tests.support.clips import textured

pytestmark = [pytest.mark.ffmpeg]

FRAMES = 40
GOP = ["-g", "12", "-keyint_min", "12", "-sc_threshold", "0"]
X265 = "keyint=12:min-keyint=12:scenecut=0:open-gop=1:bframes=3:log-level=error"
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "10", *GOP, "-pix_fmt", "yuv420p"]

SOURCES: dict[str, tuple[str, list[str]]] = {
    # name: (file suffix, encoder and muxer arguments)
    "mpegts-h264-bframes": ("ts", [*X264, "-bf", "3", "-f", "mpegts"]),
    "mpegts-h264-no-bframes": ("ts", [*X264, "-bf", "0", "-f", "mpegts"]),
    "mpegts-h264-open-gop": ("ts", [*X264, "-bf", "3", "-x264-params", "open-gop=1", "-f", "mpegts"]),
    "m2ts-h264": ("m2ts", [*X264, "-bf", "2", "-f", "mpegts", "-mpegts_m2ts_mode", "1"]),
    "mpegts-mpeg2-open-gop": ("ts", ["-c:v", "mpeg2video", "-q:v", "2", *GOP, "-bf", "2", "-f", "mpegts"]),
    "mp4-h264-edit-list": ("mp4", [*X264, "-bf", "2"]),
    "mp4-h264-no-edit-list": ("mp4", [*X264, "-bf", "2", "-use_editlist", "0"]),
    "mp4-h264-open-gop": ("mp4", [*X264, "-bf", "3", "-x264-params", "open-gop=1"]),
    "mp4-hevc-open-gop": (
        "mp4",
        [
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            X265,
            "-pix_fmt",
            "yuv420p",
            "-tag:v",
            "hvc1",
        ],
    ),
    "mp4-av1": ("mp4", ["-c:v", "libaom-av1", "-cpu-used", "8", "-crf", "20", *GOP, "-pix_fmt", "yuv420p"]),
    "mkv-h264-late-start": ("mkv", [*X264, "-bf", "2", "-output_ts_offset", "2.48"]),
    "webm-vp9": (
        "webm",
        ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", *GOP, "-pix_fmt", "yuv420p"],
    ),
    "flv-h264": ("flv", [*X264, "-bf", "2", "-f", "flv"]),
    "avi-mpeg4-bframes": ("avi", ["-c:v", "mpeg4", "-q:v", "2", *GOP, "-bf", "2"]),
    "mov-prores": ("mov", ["-c:v", "prores_ks", "-profile:v", "1", "-pix_fmt", "yuv422p10le"]),
    "mov-dnxhr": ("mov", ["-c:v", "dnxhd", "-profile:v", "dnxhr_lb", "-pix_fmt", "yuv422p", "-s", "256x144"]),
}


def _make(path: Path, args: list[str]) -> None:
    width, height = 64, 48
    strip = textured(width + 3 * FRAMES, height, seed=11)
    raw = b"".join(np.ascontiguousarray(strip[:, 3 * i : 3 * i + width]).tobytes() for i in range(FRAMES))
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{width}x{height}", "-framerate", "25", "-i", "pipe:0", *args, str(path)],
        input=raw, capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()


def _fingerprint(frame: Any) -> str:
    pixels = frame.reformat(format="rgb48le").to_ndarray()
    return hashlib.md5(pixels.tobytes()).hexdigest()  # noqa: S324 - a fingerprint, not security


@pytest.fixture(scope="module", params=sorted(SOURCES))
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    suffix, args = SOURCES[request.param]
    path = tmp_path_factory.mktemp("exact") / f"{request.param}.{suffix}"
    _make(path, args)
    return path, request.param


def test_a_chunk_starting_at_any_frame_gets_exactly_the_frames_of_a_full_decode(
    source: tuple[Path, str],
) -> None:
    path, name = source
    whole = [(frame.pts, _fingerprint(frame)) for frame in decode_video(path)]
    assert len(whole) == FRAMES, f"{name}: the full decode gave {len(whole)} frames"
    assert len({md5 for _, md5 in whole}) == FRAMES
    analysis = analyse(path, 25, 1, AnalysisSettings(27.0, 8, 64, 1.0))
    base = analysis.stream_time_base
    timed = all(p is not None for p in analysis.frame_pts)

    wrong = []
    for first in range(FRAMES - 1):
        frames = list(range(first, min(FRAMES, first + 3)))
        chunk = SourceRange(
            bucket="b", key=name, version_id=None, etag="", size_bytes=1,
            time_base_num=base.numerator, time_base_den=base.denominator,
            frame_pts=tuple(int(analysis.frame_pts[i] or 0) for i in frames) if timed else None,
            frame_indices=tuple(frames),
            decode_start_pts=decode_start(analysis, first) if timed else None,
        )  # fmt: skip
        try:
            got = [_fingerprint(frame) for frame in source_frames(str(path), chunk)]
        except Exception as exc:  # every start is reported, not just the first to fail
            wrong.append(f"start {first}: {type(exc).__name__}: {exc}")
            continue
        if got != [whole[i][1] for i in frames]:
            wrong.append(f"start {first}: other pixels than the full decode")
    assert wrong == [], f"{name}: {len(wrong)} of {FRAMES - 1} chunk starts read wrongly:\n" + "\n".join(
        wrong
    )


def test_the_plan_starts_each_decode_at_the_last_keyframe_at_or_before_the_chunk(
    tmp_path: Path,
) -> None:
    path = tmp_path / "closed.mp4"
    _make(path, [*X264, "-bf", "2"])
    analysis = analyse(path, 25, 1, AnalysisSettings(27.0, 8, 64, 1.0))

    assert analysis.keyframes == (0, 12, 24, 36)
    tick = Fraction(1, 25) / analysis.stream_time_base
    assert [decode_start(analysis, i) for i in (0, 11, 12, 13, 39)] == [
        analysis.frame_pts[0],
        analysis.frame_pts[0],
        analysis.frame_pts[0] + 12 * tick,
        analysis.frame_pts[0] + 12 * tick,
        analysis.frame_pts[0] + 36 * tick,
    ]
