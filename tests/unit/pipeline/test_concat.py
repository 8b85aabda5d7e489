"""Encoded chunks join by stream copy into one stream with exact output timestamps."""

from __future__ import annotations

import itertools
import json
import subprocess
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infiniteflow_common.events import JobSplit, VideoEncoding
from infiniteflow_common.media import decode_video
from services.gpu_interp.media_io import ChunkEncoder
from services.muxer.assemble import output_stamps, remux_command, run_ffmpeg, track_timescale
from services.muxer.concat import (
    ConcatError,
    chunk_layout,
    concatenate,
    decode_stamps,
    presentation_order,
    reorder_delay,
)
from tests.support.clips import run, textured

NTSC60 = Fraction(60000, 1001)


def _plan(out_rate: Fraction, frames: int) -> JobSplit:
    return JobSplit(
        job_id=uuid.UUID(int=3), chunk_count=1, source_frame_count=frames // 2, in_fps_num=out_rate.numerator,
        in_fps_den=out_rate.denominator * 2, out_fps_num=out_rate.numerator, out_fps_den=out_rate.denominator,
        out_frame_count=frames, scene_cuts=(), vfr_converted=False, split_at=datetime(2026, 11, 30, tzinfo=UTC),
    )  # fmt: skip


def test_a_packets_presentation_index_comes_from_its_chunks_own_rounded_timestamps() -> None:
    # 59.94 fps in Matroska's 1 ms ticks: frame k at round(k · 16.683) ms, in decode order I P B B
    assert presentation_order([0, 50, 17, 33], Fraction(1, 1000), NTSC60) == [0, 3, 1, 2]
    assert presentation_order([1000, 1067, 1033], Fraction(1, 1000), Fraction(30)) == [0, 2, 1]
    assert presentation_order([], Fraction(1, 1000), Fraction(30)) == []


def test_the_reorder_delay_is_how_far_decode_order_runs_ahead() -> None:
    assert reorder_delay([0, 1, 2, 3]) == 0, "no B-frames"
    assert reorder_delay([0, 3, 1, 2]) == 1
    assert reorder_delay([0, 4, 2, 1, 3, 5]) == 2, "a B-pyramid"
    assert reorder_delay([]) == 0


def test_decode_stamps_before_the_first_frame_repeat_the_first_interval_backwards() -> None:
    assert decode_stamps([0, 10, 20, 30], 0, 4) == [0, 10, 20, 30]
    assert decode_stamps([0, 10, 20, 30], 2, 4) == [-20, -10, 0, 10]
    assert decode_stamps([5], 0, 1) == [5]


@st.composite
def _chunked_streams(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Presentation indices in decode order of several chunks (each any reordering), and the stamps."""
    order: list[int] = []
    for _ in range(draw(st.integers(1, 4))):
        size = draw(st.integers(1, 12))
        order += [len(order) + i for i in draw(st.permutations(range(size)))]
    steps = draw(st.lists(st.integers(1, 5000), min_size=len(order), max_size=len(order)))
    start = draw(st.integers(0, 10_000))
    stamps = [start + sum(steps[:k]) for k in range(len(order))]
    return order, stamps


@given(_chunked_streams())
def test_decode_stamps_strictly_increase_and_never_pass_a_presentation_stamp(
    stream: tuple[list[int], list[int]],
) -> None:
    order, stamps = stream
    delay = reorder_delay(order)
    dts = decode_stamps(stamps, delay, len(order))
    assert all(b > a for a, b in itertools.pairwise(dts))
    assert all(dts[j] <= stamps[order[j]] for j in range(len(order)))


@pytest.mark.parametrize("rate", [NTSC60, Fraction(60), Fraction(24000, 1001), Fraction(50), Fraction(120)])
def test_constant_rate_stamps_are_k_over_rate_in_whole_ticks(rate: Fraction) -> None:
    base, stamps = output_stamps(_plan(rate, 1000))
    assert base == Fraction(1, track_timescale(rate))
    assert len(stamps) == 1000
    assert all(isinstance(s, int) for s in stamps)
    assert [s * base for s in stamps] == [k / rate for k in range(1000)]


def _encode(path: Path, encoding: VideoEncoding, levels: list[int], rate: Fraction) -> None:
    with ChunkEncoder(path, encoding, width=64, height=32, rate=rate, timeout_s=60) as encoder:
        for level in levels:
            encoder.write_rgb(np.full((32, 64, 3), level, np.uint8))


def _panning(count: int) -> list[npt.NDArray[np.uint8]]:
    """A texture moving 3 px a frame (smooth motion: the encoder uses B-frames)."""
    strip = textured(64 + 3 * count, 32, seed=2)
    return [np.ascontiguousarray(strip[:, 3 * i : 3 * i + 64]) for i in range(count)]


def _probe(path: Path, *entries: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", ":".join(entries), "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    probed: dict[str, Any] = json.loads(out.stdout)
    return probed


def _decodes_cleanly(path: Path) -> None:
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.ffmpeg
def test_two_h264_chunks_join_into_one_exact_stream(tmp_path: Path) -> None:
    encoding = VideoEncoding(encoder="libx264", pix_fmt="yuv444p", crf=10, preset="medium")  # B-frames
    images = _panning(12)
    paths, frames = [tmp_path / "0.mkv", tmp_path / "1.mkv"], [7, 5]
    for path, part in zip(paths, (images[:7], images[7:]), strict=True):
        with ChunkEncoder(path, encoding, width=64, height=32, rate=NTSC60, timeout_s=60) as encoder:
            for image in part:
                encoder.write_rgb(image)
    _, delay = chunk_layout(paths, frames, NTSC60)
    assert delay > 0, "the chunks reorder frames, so decode stamps must be shifted"

    base, stamps = output_stamps(_plan(NTSC60, 12))
    concatenate(paths, frames, NTSC60, tmp_path / "v.mp4", base, stamps)

    probed = _probe(
        tmp_path / "v.mp4", "stream=nb_read_frames,r_frame_rate,avg_frame_rate,time_base,codec_name"
    )
    stream = probed["streams"][0]
    assert stream["codec_name"] == "h264"
    assert int(stream["nb_read_frames"]) == 12
    assert stream["r_frame_rate"] == stream["avg_frame_rate"] == "60000/1001"
    assert Fraction(stream["time_base"]) == base
    _decodes_cleanly(tmp_path / "v.mp4")
    decoded = list(decode_video(tmp_path / "v.mp4"))
    assert [frame.pts for frame in decoded] == stamps
    for index, frame in enumerate(decoded):
        rgb = frame.to_ndarray(format="rgb24").astype(int)
        errors = [np.abs(rgb - image).mean() for image in images]
        assert int(np.argmin(errors)) == index, "every frame in its place, chunk by chunk"
        assert errors[index] < 4


@pytest.mark.ffmpeg
def test_hevc_chunks_join_and_mux_with_the_sources_audio_as_hvc1(tmp_path: Path) -> None:
    encoding = VideoEncoding(
        encoder="libx265", pix_fmt="yuv420p10le", preset="ultrafast", color_range="tv",
        color_space="bt2020nc", color_transfer="smpte2084", color_primaries="bt2020",
    )  # fmt: skip
    rate = Fraction(30)
    paths = [tmp_path / "0.mkv", tmp_path / "1.mkv"]
    _encode(paths[0], encoding, [10 * i for i in range(6)], rate)
    _encode(paths[1], encoding, [10 * i for i in range(6, 10)], rate)
    base, stamps = output_stamps(_plan(rate, 10))
    concatenate(paths, [6, 4], rate, tmp_path / "v.mp4", base, stamps)
    run("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", str(tmp_path / "src.m4a"))
    command = remux_command(
        tmp_path / "v.mp4", tmp_path / "src.m4a", tmp_path / "o.mp4", [], timescale=base.denominator
    )
    run_ffmpeg(command, timeout_s=60)

    streams = _probe(
        tmp_path / "o.mp4",
        "stream=codec_type,codec_name,codec_tag_string,nb_read_frames,r_frame_rate,pix_fmt,color_transfer",
    )["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    assert (video["codec_name"], video["codec_tag_string"]) == ("hevc", "hvc1"), "the tag players expect"
    assert (video["pix_fmt"], video["color_transfer"]) == ("yuv420p10le", "smpte2084")
    assert int(video["nb_read_frames"]) == 10
    assert video["r_frame_rate"] == "30/1"
    assert [s["codec_type"] for s in streams] == ["video", "audio"]
    _decodes_cleanly(tmp_path / "o.mp4")


@pytest.mark.ffmpeg
def test_chunks_that_do_not_hold_the_planned_frames_are_refused(tmp_path: Path) -> None:
    encoding = VideoEncoding(encoder="libx264", pix_fmt="yuv420p", preset="ultrafast")
    _encode(tmp_path / "0.mkv", encoding, [0, 50, 100], Fraction(25))
    base, stamps = output_stamps(_plan(Fraction(25), 4))
    with pytest.raises(ConcatError) as error:
        concatenate([tmp_path / "0.mkv"], [4], Fraction(25), tmp_path / "v.mp4", base, stamps)
    assert error.value.code == "E_MUX_CHUNKS"
    with pytest.raises(ConcatError) as error:
        concatenate([tmp_path / "0.mkv"], [3], Fraction(25), tmp_path / "v.mp4", base, stamps)
    assert error.value.code == "E_MUX_FRAME_COUNT"
