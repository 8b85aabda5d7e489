"""ffprobe's JSON (captured from files ffmpeg made) maps to MediaProbe, and bad media to stable codes.

The samples in `samples/` were produced with ffprobe 5.1 `-show_streams -show_format` on clips made by
`ffmpeg -f lavfi -i testsrc2 …`: a 2 s 320×180 30 fps H.264+AAC MP4, a 10-bit 4:4:4 321×181 24000/1001
Matroska, a VFR MP4 (frame spacing doubles after frame 20), an MP4 with a 90° display matrix, an
audio-only M4A and an M4A whose only picture is cover art.
"""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from services.ingest.config import DEFAULT_ALLOWED_FORMATS
from services.ingest.probe import (
    ProbeError,
    ProbeLimits,
    bit_depth_of,
    check_frame_budget,
    classify_failure,
    detect_vfr,
    map_probe,
    parse_rate,
    rotation_of,
)

SAMPLES = Path(__file__).parent / "samples"
LIMITS = ProbeLimits(allowed_formats=DEFAULT_ALLOWED_FORMATS)


def _sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return doc


def _pts(name: str) -> list[int]:
    return list(json.loads((SAMPLES / f"{name}_pts.json").read_text()))


def _code(doc: dict[str, Any], limits: ProbeLimits = LIMITS, frames: int | None = 60) -> str:
    with pytest.raises(ProbeError) as caught:
        map_probe(doc, limits, frame_count=frames)
    return caught.value.code


def test_an_h264_mp4_with_audio_maps_field_for_field() -> None:
    probe = map_probe(_sample("a_mp4"), LIMITS, frame_count=60, pts=_pts("a_mp4"))
    assert probe.format_name == "mov,mp4,m4a,3gp,3g2,mj2"
    assert (probe.video_codec, probe.width, probe.height, probe.pix_fmt, probe.bit_depth) == (
        "h264",
        320,
        180,
        "yuv420p",
        8,
    )
    assert (probe.fps_num, probe.fps_den, probe.avg_fps_num, probe.avg_fps_den) == (30, 1, 30, 1)
    assert (probe.frame_count, probe.duration_s, probe.start_time_s) == (60, 2.0, 0.0)
    assert not probe.is_vfr
    assert probe.rotation == 0
    assert (probe.has_audio, probe.audio_streams, probe.subtitle_streams) == (True, 1, 0)


def test_ten_bit_odd_size_ntsc_rate_is_exact() -> None:
    probe = map_probe(_sample("b10_mkv"), LIMITS, frame_count=24)
    assert (probe.width, probe.height) == (321, 181)
    assert (probe.pix_fmt, probe.bit_depth) == ("yuv444p10le", 10)
    assert Fraction(probe.fps_num, probe.fps_den) == Fraction(24000, 1001)
    assert probe.format_name == "matroska,webm"
    assert (probe.color_primaries, probe.color_transfer, probe.color_space) == ("bt709", "bt709", "bt709")
    assert not probe.has_audio


def test_variable_frame_rate_is_detected_from_packet_timestamps() -> None:
    probe = map_probe(_sample("vfr_mp4"), LIMITS, frame_count=40, pts=_pts("vfr_mp4"))
    assert probe.is_vfr
    assert Fraction(probe.avg_fps_num, probe.avg_fps_den) == Fraction(400, 19)


def test_the_display_matrix_gives_the_rotation() -> None:
    assert map_probe(_sample("rot_mp4"), LIMITS, frame_count=60).rotation == 90


def test_audio_only_and_cover_art_only_have_no_video() -> None:
    assert _code(_sample("audio_m4a")) == "E_PROBE_NO_VIDEO"
    with pytest.raises(ProbeError, match="cover art") as caught:
        map_probe(_sample("cover_m4a"), LIMITS, frame_count=1)
    assert caught.value.code == "E_PROBE_NO_VIDEO"


def test_pixels_over_the_limit_are_refused() -> None:
    small = ProbeLimits(allowed_formats=DEFAULT_ALLOWED_FORMATS, max_width=320, max_height=179)
    assert _code(_sample("a_mp4"), small) == "E_PROBE_TOO_LARGE"


@pytest.mark.parametrize(("r", "avg"), [("0/0", "0/0"), ("90000/1", "0/0"), ("1/3600", "1/3600")])
def test_absent_or_absurd_frame_rates_are_refused(r: str, avg: str) -> None:
    doc = copy.deepcopy(_sample("a_mp4"))
    doc["streams"][0].update(r_frame_rate=r, avg_frame_rate=avg)
    assert _code(doc) == "E_PROBE_BAD_FRAME_RATE"


def test_a_bogus_nominal_rate_falls_back_to_the_average() -> None:
    doc = copy.deepcopy(_sample("a_mp4"))
    doc["streams"][0]["r_frame_rate"] = "90000/1"
    probe = map_probe(doc, LIMITS, frame_count=60)
    assert (probe.fps_num, probe.fps_den) == (30, 1)


def test_fewer_than_two_frames_cannot_be_interpolated() -> None:
    assert _code(_sample("a_mp4"), frames=1) == "E_PROBE_SINGLE_FRAME"


def test_too_many_streams_are_refused() -> None:
    doc = copy.deepcopy(_sample("a_mp4"))
    doc["streams"] += [copy.deepcopy(doc["streams"][1]) for _ in range(40)]
    assert _code(doc) == "E_PROBE_TOO_MANY_STREAMS"


@pytest.mark.parametrize("name", ["hls", "concat", "image2", "png_pipe", "tty"])
def test_demuxers_outside_the_whitelist_are_refused(name: str) -> None:
    doc = copy.deepcopy(_sample("a_mp4"))
    doc["format"]["format_name"] = name
    assert _code(doc) == "E_PROBE_FORMAT_NOT_ALLOWED"


def test_frames_times_multiplier_over_the_budget_is_a_frame_count_bomb() -> None:
    limits = ProbeLimits(allowed_formats=DEFAULT_ALLOWED_FORMATS, max_output_frames=1000)
    check_frame_budget(500, Fraction(2), limits)
    with pytest.raises(ProbeError) as caught:
        check_frame_budget(501, Fraction(2), limits)
    assert caught.value.code == "E_PROBE_TOO_MANY_FRAMES"


@pytest.mark.parametrize(
    ("stderr", "code"),
    [
        (
            "[hls @ 0x55] Format not on whitelist 'mov,mp4'\nfile:/tmp/x/source: Invalid argument",
            "E_PROBE_FORMAT_NOT_ALLOWED",
        ),
        ("file:/tmp/x/source: Invalid data found when processing input", "E_PROBE_UNREADABLE"),
        ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] moov atom not found\nfile:/s: Invalid data", "E_PROBE_UNREADABLE"),
    ],
)
def test_ffprobe_failures_map_to_codes_without_leaking_our_paths(stderr: str, code: str) -> None:
    error = classify_failure(stderr)
    assert error.code == code
    assert "/tmp/x" not in error.message


@pytest.mark.parametrize(
    ("text", "value"),
    [("30/1", Fraction(30)), ("30000/1001", Fraction(30000, 1001)), ("0/0", None), ("x", None), (None, None)],
)
def test_rates_parse_exactly(text: object, value: Fraction | None) -> None:
    assert parse_rate(text) == value


@pytest.mark.parametrize(
    ("pix_fmt", "bits"),
    [
        ("yuv420p", 8),
        ("nv12", 8),
        ("yuv420p10le", 10),
        ("yuv444p12be", 12),
        ("p010le", 10),
        ("gray10le", 10),
        ("rgb48le", 16),
        ("gbrp16le", 16),
        ("rgb24", 8),
    ],
)
def test_bit_depth_follows_the_pixel_format(pix_fmt: str, bits: int) -> None:
    assert bit_depth_of(pix_fmt) == bits


@pytest.mark.parametrize(
    ("stream", "degrees"),
    [
        ({"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]}, 270),
        ({"side_data_list": [{"rotation": 180}]}, 180),
        ({"tags": {"rotate": "90"}}, 270),
        ({}, 0),
    ],
)
def test_rotation_is_normalised_counter_clockwise(stream: dict[str, Any], degrees: int) -> None:
    assert rotation_of(stream) == degrees


def test_one_tick_jitter_is_rounding_not_vfr() -> None:
    assert detect_vfr([0, 33, 67, 100, 133, 167, 200]) is False  # 29.97 fps in a 1 ms time base
    assert detect_vfr([0, 512, 1024, 2048, 2560]) is True
    assert detect_vfr([0, 512]) is None
