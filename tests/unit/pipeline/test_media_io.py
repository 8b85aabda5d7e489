"""A worker reads exactly its frames of the source and encodes its chunk at the exact output rate."""

from __future__ import annotations

import hashlib
import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infiniteflow_common.events import SourceRange, VideoEncoding
from infiniteflow_common.media import MediaError, decode_video
from services.gpu_interp.media_io import ChunkEncoder, EncodeError, source_frames
from services.muxer.concat import chunk_layout
from tests.support.clips import textured

pytestmark = [pytest.mark.ffmpeg]


def _md5(frame: Any) -> str:
    return hashlib.md5(frame.to_ndarray().tobytes()).hexdigest()  # noqa: S324 - a fingerprint


def _range(*, pts: tuple[int, ...] | None = None, indices: tuple[int, ...] = ()) -> SourceRange:
    return SourceRange(
        bucket="uploads", key="clip", version_id=None, etag="e", size_bytes=1, time_base_num=1,
        time_base_den=1000, frame_pts=pts, frame_indices=indices,
    )  # fmt: skip


@pytest.fixture(scope="module", params=["mkv", "mp4"])
def source(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Any]]:
    """50 distinct frames, a keyframe every 10 and B-frames; each frame's (pts, md5) as decoded whole."""
    path = tmp_path_factory.mktemp("source") / f"clip.{request.param}"
    strip = textured(64 + 2 * 50, 48, seed=5)
    raw = b"".join(np.ascontiguousarray(strip[:, 2 * i : 2 * i + 64]).tobytes() for i in range(50))
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
         "-framerate", "25", "-i", "pipe:0", "-c:v", "libx264", "-crf", "4", "-g", "10", "-keyint_min", "10",
         "-bf", "2", "-pix_fmt", "yuv420p", str(path)],
        input=raw, capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    frames = [(frame.pts, _md5(frame)) for frame in decode_video(path)]
    assert len(frames) == 50
    assert len({md5 for _, md5 in frames}) == 50
    return path, frames


def test_a_range_by_timestamps_mid_file_gives_exactly_its_frames(source: tuple[Path, list[Any]]) -> None:
    path, frames = source
    wanted = frames[23:31]  # from inside a GOP across the next keyframe
    got = list(source_frames(str(path), _range(pts=tuple(pts for pts, _ in wanted))))
    assert [(frame.pts, _md5(frame)) for frame in got] == wanted


def test_a_repeated_frame_comes_again_where_the_plan_repeats_it(source: tuple[Path, list[Any]]) -> None:
    path, frames = source
    plan = [frames[i] for i in (40, 41, 41, 41, 42, 49, 49)]
    got = list(source_frames(str(path), _range(pts=tuple(pts for pts, _ in plan))))
    assert [_md5(frame) for frame in got] == [md5 for _, md5 in plan]


def test_without_timestamps_frames_are_counted_from_the_start(source: tuple[Path, list[Any]]) -> None:
    path, frames = source
    indices = (0, 1, 1, 17, 18, 19)
    got = list(source_frames(str(path), _range(indices=indices)))
    assert [_md5(frame) for frame in got] == [frames[i][1] for i in indices]


def test_a_frame_the_source_lacks_is_refused(source: tuple[Path, list[Any]]) -> None:
    path, frames = source
    missing = frames[20][0] + 1  # between two frames' timestamps
    with pytest.raises(MediaError) as error:
        list(source_frames(str(path), _range(pts=(frames[20][0], missing))))
    assert error.value.code == "E_CHUNK_FRAME_COUNT"
    with pytest.raises(MediaError) as error:
        list(source_frames(str(path), _range(indices=(48, 49, 50))))
    assert error.value.code == "E_CHUNK_FRAME_COUNT"
    assert "ended 1 frame" in error.value.message


def test_the_encoder_writes_every_frame_at_its_rate_and_copies_stay_exact(
    source: tuple[Path, list[Any]], tmp_path: Path
) -> None:
    path, frames = source
    lossless = VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=0, preset="ultrafast")
    rate = Fraction(60000, 1001)
    output = tmp_path / "chunk.mkv"
    with ChunkEncoder(output, lossless, width=64, height=48, rate=rate, timeout_s=60) as encoder:
        for frame in source_frames(str(path), _range(indices=tuple(range(10)))):
            encoder.write(frame)
        encoder.write_rgb(np.zeros((48, 64, 3), np.uint8))
    assert encoder.count == 11
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_name,pix_fmt,nb_read_frames", "-of", "json", str(output)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stream = json.loads(out.stdout)["streams"][0]
    assert (stream["codec_name"], stream["pix_fmt"], int(stream["nb_read_frames"])) == ("h264", "yuv420p", 11)
    # Matroska keeps 1 ms ticks: frame k sits within half a tick of k / rate, and the muxer reads k back
    layout, _ = chunk_layout([output], [11], rate)
    assert sorted(layout[0]) == list(range(11))
    decoded = list(decode_video(output))
    assert [_md5(frame) for frame in decoded[:10]] == [md5 for _, md5 in frames[:10]], "copies pass bit-exact"
    assert [frame.pts * frame.time_base for frame in decoded] == pytest.approx(
        [float(k / rate) for k in range(11)], abs=0.0005
    )


def test_an_encode_ffmpeg_refuses_is_an_encode_error_and_leaves_no_file(tmp_path: Path) -> None:
    output = tmp_path / "chunk.mkv"
    odd = VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=20, preset="ultrafast")
    with (  # noqa: PT012 - FFmpeg may fail on a write or on the close
        pytest.raises(EncodeError) as error,
        ChunkEncoder(output, odd, width=33, height=17, rate=Fraction(25), timeout_s=60) as encoder,
    ):
        for _ in range(3):
            encoder.write_rgb(np.zeros((17, 33, 3), np.uint8))
    assert error.value.code == "E_ENCODE_FAILED"
    assert "ffmpeg" in error.value.message


def test_an_aborted_chunk_leaves_no_partial_file(tmp_path: Path) -> None:
    output = tmp_path / "chunk.mkv"
    encoding = VideoEncoding(encoder="libx264", pix_fmt="yuv420p", crf=20, preset="ultrafast")
    with (  # noqa: PT012 - the chunk fails while it is being written
        pytest.raises(RuntimeError, match="stop"),
        ChunkEncoder(output, encoding, width=32, height=16, rate=Fraction(25), timeout_s=60) as encoder,
    ):
        encoder.write_rgb(np.zeros((16, 32, 3), np.uint8))
        raise RuntimeError("stop")
    assert not output.exists()
