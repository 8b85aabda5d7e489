"""Users choose the output codec, its rate control and preset; what this FFmpeg cannot do is refused."""

from __future__ import annotations

import pytest

from infiniteflow_common.events import MediaProbe
from infiniteflow_common.output import available_encoders, parse_bitrate
from services.ingest.params import (
    InvalidParams,
    ParamDefaults,
    output_metadata,
    parse_output_options,
    resolve_output,
)

ALL = ParamDefaults(encoders=frozenset({"libx264", "libx265", "libsvtav1", "libaom-av1"}))
H264_ONLY = ParamDefaults(encoders=frozenset({"libx264"}))


def _probe(codec: str) -> MediaProbe:
    return MediaProbe(
        format_name="mov,mp4", video_codec=codec, width=64, height=32, pix_fmt="yuv420p", bit_depth=8,
        fps_num=25, fps_den=1, avg_fps_num=25, avg_fps_den=1, frame_count=25, duration_s=1.0, is_vfr=False,
        rotation=0, color_range=None, color_space=None, color_transfer=None, color_primaries=None,
        has_audio=False, audio_streams=0, subtitle_streams=0,
    )  # fmt: skip


def test_without_options_the_output_is_h264_at_the_muxers_defaults() -> None:
    options = parse_output_options({}, ALL)
    assert (options.codec, options.encoder, options.crf, options.bitrate, options.preset) == (
        "h264",
        "libx264",
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("asked", "codec", "encoder"),
    [
        ("H265", "h265", "libx265"),
        ("hevc", "h265", "libx265"),
        ("av1", "av1", "libsvtav1"),
        ("x264", "h264", "libx264"),
    ],
)
def test_codecs_are_named_as_users_know_them(asked: str, codec: str, encoder: str) -> None:
    options = parse_output_options({"codec": asked}, ALL)
    assert (options.codec, options.encoder) == (codec, encoder)


def test_av1_falls_back_to_libaom_when_svt_is_missing() -> None:
    defaults = ParamDefaults(encoders=frozenset({"libx264", "libaom-av1"}))
    assert parse_output_options({"codec": "av1"}, defaults).encoder == "libaom-av1"


def test_a_codec_this_ffmpeg_cannot_encode_is_refused_with_what_it_can() -> None:
    with pytest.raises(InvalidParams) as error:
        parse_output_options({"codec": "h265"}, H264_ONLY)
    assert error.value.code == "E_OUTPUT_CODEC_UNSUPPORTED"
    assert "choose one of h264, source" in error.value.message
    with pytest.raises(InvalidParams) as unknown:
        parse_output_options({"codec": "vp9"}, ALL)
    assert unknown.value.code == "E_OUTPUT_CODEC_UNSUPPORTED"


def test_crf_or_bitrate_and_a_preset_in_the_encoders_own_terms() -> None:
    x265 = parse_output_options({"codec": "h265", "crf": "20", "preset": "Slow"}, ALL)
    assert (x265.crf, x265.preset) == (20, "slow")
    svt = parse_output_options({"codec": "av1", "bitrate": "2.5M", "preset": "10"}, ALL)
    assert (svt.bitrate, svt.crf, svt.preset) == (2_500_000, None, "10")
    for bad in (
        {"crf": "20", "bitrate": "8M"},
        {"crf": "52"},
        {"crf": "high"},
        {"codec": "av1", "preset": "medium"},
        {"codec": "h264", "preset": "7"},
        {"bitrate": "fast"},
        {"bitrate": "2000M"},
    ):
        with pytest.raises(InvalidParams) as error:
            parse_output_options(bad, ALL)
        assert error.value.code == "E_PARAM_INVALID", bad
    assert parse_bitrate("2500k") == 2_500_000


def test_same_as_input_takes_the_sources_codec_once_it_is_probed() -> None:
    asked = parse_output_options({"codec": "same"}, ALL)
    assert (asked.codec, asked.encoder) == ("source", None)
    assert resolve_output(asked, _probe("hevc"), ALL).encoder == "libx265"
    assert resolve_output(asked, _probe("av1"), ALL).encoder == "libsvtav1"
    with pytest.raises(InvalidParams) as error:
        resolve_output(asked, _probe("vp9"), ALL)
    assert error.value.code == "E_OUTPUT_CODEC_UNSUPPORTED"
    assert "vp9" in error.value.message


def test_the_options_travel_as_object_metadata_and_read_back_the_same() -> None:
    asked = parse_output_options({"codec": "source", "bitrate": "8M", "preset": "slow"}, ALL)
    metadata = output_metadata(asked)
    assert metadata == {"codec": "source", "bitrate": "8000000", "preset": "slow"}
    assert parse_output_options(metadata, ALL) == asked


@pytest.mark.ffmpeg
def test_the_encoders_are_the_ones_ffmpeg_lists() -> None:
    encoders = available_encoders()
    assert "libx264" in encoders
    assert "ffv1" in encoders
    assert "aac" not in encoders, "audio encoders are not video encoders"
